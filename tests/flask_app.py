"""A real Flask app served through wsgipool in the tests."""

from __future__ import annotations

import os

from flask import Flask, Response, request, session, stream_with_context

app = Flask(__name__)
app.secret_key = "tests-only-not-secret"


@app.get("/visits")
def visits() -> dict[str, object]:
    """Counts this client's visits in Flask's signed session cookie."""
    session["visits"] = session.get("visits", 0) + 1
    return {"visits": session["visits"]}


@app.get("/")
def index() -> dict[str, object]:
    return {"pid": os.getpid(), "script_root": request.script_root, "path": request.path}


@app.post("/upload")
def upload() -> dict[str, object]:
    data = request.get_data()
    return {"size": len(data), "head": data[:10].decode("latin-1")}


@app.post("/form")
def form() -> dict[str, object]:
    upload = request.files["file"]
    return {"name": request.form["name"], "file": upload.read().decode()}


@app.get("/stream")
def stream() -> Response:
    def lines():  # type: ignore[no-untyped-def]
        for i in range(3):
            yield f"line {i}\n"

    return Response(stream_with_context(lines()), mimetype="text/plain")


@app.get("/error")
def error() -> str:
    raise RuntimeError("flask view failed")
