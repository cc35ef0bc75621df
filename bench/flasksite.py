"""The ``flask`` workload: one page, a small sqlite3 query rendered by a Jinja2 template.

``GET /page`` is the same page as the Django site's (``bench.djangosite``), built the way a
Flask tutorial app builds it: a connection per request, closed when the request ends.
"""

from __future__ import annotations

import sqlite3

from flask import Flask, g, render_template

from bench.sitedata import QUERY, SHOWN, TEMPLATES, database

app = Flask(__name__, template_folder=str(TEMPLATES))
app.jinja_env.keep_trailing_newline = True  # byte for byte the Django page


def db() -> sqlite3.Connection:
    if "db" not in g:
        g.db = sqlite3.connect(database())
        g.db.row_factory = sqlite3.Row
    connection: sqlite3.Connection = g.db
    return connection


@app.teardown_appcontext
def close_db(error: BaseException | None) -> None:
    connection = g.pop("db", None)
    if connection is not None:
        connection.close()


@app.get("/page")
def page() -> str:
    items = [dict(row) for row in db().execute(QUERY, (SHOWN,))]
    return render_template("items.html", title="Items", items=items)


@app.get("/hello")
def hello() -> str:
    return "Hello, world!"
