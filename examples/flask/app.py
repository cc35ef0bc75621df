"""A Flask app served by wsgipool. From the repository root:

    pip install ".[serve]" flask
    wsgipool serve --chdir examples/flask app:app --workers 2

then open http://127.0.0.1:8000/ (each answer names the worker process that made it).
"""

from __future__ import annotations

import os

from flask import Flask, request

app = Flask(__name__)


@app.get("/")
def index() -> dict[str, object]:
    return {"hello": "from Flask", "worker_pid": os.getpid(), "root": request.script_root}


@app.post("/echo")
def echo() -> dict[str, object]:
    return {"received": request.get_data(as_text=True)}
