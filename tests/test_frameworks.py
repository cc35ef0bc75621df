"""Real Flask and Django apps through wsgipool under a real uvicorn."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import flask_app
from wsgipool import WsgiToAsgi


def test_flask_app_object_and_import_string(serve: Any) -> None:
    for target in (flask_app.app, flask_app.app.wsgi_app, "flask_app:app"):
        adapter = WsgiToAsgi(target, workers=1)
        with serve(adapter, root_path="/legacy") as server, server.client() as client:
            data = client.get("/").json()
            assert data["pid"] != os.getpid()
            assert data["script_root"] == "/legacy"
            assert data["path"] == "/"


def test_flask_bodies_forms_streams_and_errors(serve: Any) -> None:
    def chunked() -> Iterator[bytes]:
        yield b"0123456789"
        yield b"x" * 100_000

    with serve(WsgiToAsgi("flask_app:app", workers=1)) as server, server.client() as client:
        # No Content-Length: Flask reads it thanks to wsgi.input_terminated.
        assert client.post("/upload", content=chunked()).json() == {
            "size": 100_010,
            "head": "0123456789",
        }
        response = client.post("/form", data={"name": "n"}, files={"file": ("f.txt", b"file body")})
        assert response.json() == {"name": "n", "file": "file body"}
        assert client.get("/stream").text == "line 0\nline 1\nline 2\n"
        assert client.get("/error").status_code == 500


def test_django_project(serve: Any) -> None:
    adapter = WsgiToAsgi("djsite.wsgi:application", workers=2)
    with serve(adapter, root_path="/dj") as server, server.client() as client:
        data = client.get("/").json()
        assert data["pid"] != os.getpid()
        assert data["script_name"] == "/dj"
        assert client.post("/echo", content=b"django body").content == b"django body"
        assert client.get("/stream").text == "chunk 0\nchunk 1\nchunk 2\n"
        assert client.get("/boom").status_code == 500
