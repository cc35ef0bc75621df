"""A small WSGI app to try wsgipool with: ``wsgipool serve wsgipool.demo:app``.

``/`` says hello and which worker answered; ``/echo`` returns the request body;
``/stream?n=5`` streams lines; ``/crash`` kills its worker (the front answers 502 and
starts a new one); ``/slow?s=2`` sleeps.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from urllib.parse import parse_qs

from ._types import Environ, StartResponse


def _query(environ: Environ, name: str, default: str) -> str:
    values: list[str] = parse_qs(environ.get("QUERY_STRING", "")).get(name, [default])
    return values[0]


def _stream(count: int) -> Iterator[bytes]:
    for i in range(count):
        yield b"line %d\n" % i


def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _stream(int(_query(environ, "n", "5")))
    if path == "/crash":
        os._exit(1)
    if path == "/slow":
        time.sleep(float(_query(environ, "s", "1")))
    if path not in ("/", "/slow"):
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    body = b"Hello from wsgipool worker pid %d\n" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
