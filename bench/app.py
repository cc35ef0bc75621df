"""The one WSGI app every contender serves, the ASGI ceiling, and the contenders themselves.

Paths of the WSGI app:

``/hello``   13-byte body
``/cpu``     about 3 ms of pure-Python work that holds the GIL
``/stream``  10 MiB in 64 KiB chunks (``?mib=N`` for another size)
``/upload``  reads the request body in 64 KiB blocks and answers with its length
``/big``     64 MiB in 64 KiB chunks: the response a slow reader never finishes (``slow.py``)
``/pid``     the serving process's pid, so ``replace.py`` knows which worker to kill

The factories at the bottom are what ``uvicorn --factory`` loads, so a wsgipool worker
importing ``bench.app:app`` builds no adapter of its own. They wrap the WSGI app named by
``BENCH_APP`` (``MODULE:ATTRIBUTE``, default this module's ``app``): ``run.py`` serves the
Django and Flask sites through every contender that way.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

HELLO = b"Hello, world!"
CHUNK = 64 * 1024
MIB = 1024 * 1024
BIG = 64 * MIB
#: Loop count of ``/cpu``: about 3 ms on the reference machine (``cpu_ms()`` measures it).
CPU_LOOPS = 17_000

_BLOCK = b"x" * CHUNK
_TEXT = [("Content-Type", "text/plain")]


def cpu_work(loops: int = CPU_LOOPS) -> int:
    x = 0
    for i in range(loops):
        x = (x * 31 + i) & 0xFFFFFFFF
    return x


def cpu_ms(rounds: int = 200) -> float:
    """Median milliseconds of one ``/cpu`` request's work in this process."""
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        cpu_work()
        times.append(time.perf_counter() - began)
    return sorted(times)[rounds // 2] * 1000


def _stream(size: int) -> Iterator[bytes]:
    full, rest = divmod(size, CHUNK)
    for _ in range(full):
        yield _BLOCK
    if rest:
        yield _BLOCK[:rest]


def _mib(environ: dict[str, Any], default: int) -> int:
    query = environ.get("QUERY_STRING", "")
    if query.startswith("mib="):
        return int(float(query[4:]) * MIB)
    return default * MIB


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/hello":
        start_response("200 OK", [*_TEXT, ("Content-Length", "13")])
        return [HELLO]
    if path == "/cpu":
        body = b"%d" % cpu_work()
        start_response("200 OK", [*_TEXT, ("Content-Length", str(len(body)))])
        return [body]
    if path == "/stream":
        size = _mib(environ, 10)
        start_response(
            "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
        )
        return _stream(size)
    if path == "/big":
        start_response(
            "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(BIG))]
        )
        return _stream(BIG)
    if path == "/pid":
        body = b"%d" % os.getpid()
        start_response("200 OK", [*_TEXT, ("Content-Length", str(len(body)))])
        return [body]
    if path == "/upload":
        stream = environ["wsgi.input"]
        total = 0
        while block := stream.read(CHUNK):
            total += len(block)
        body = b"%d" % total
        start_response("200 OK", [*_TEXT, ("Content-Length", str(len(body)))])
        return [body]
    start_response("404 Not Found", [*_TEXT, ("Content-Length", "9")])
    return [b"not found"]


async def asgi_hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Bare ASGI hello: the ceiling for anything served by uvicorn."""
    if scope["type"] != "http":
        return  # lifespan: nothing to start
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
        }
    )
    await send({"type": "http.response.body", "body": HELLO})


# -- contenders, built by `uvicorn --factory bench.app:<name>` --------------------------


def target() -> str:
    """The WSGI app the contenders serve, as ``MODULE:ATTRIBUTE``."""
    return os.environ.get("BENCH_APP", "bench.app:app")


def load(spec: str) -> Any:
    module, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module), attribute)


def make_asgi() -> Any:
    return asgi_hello


def make_asgiref() -> Any:
    from asgiref.wsgi import WsgiToAsgi

    return WsgiToAsgi(load(target()))


def make_a2wsgi() -> Any:
    from a2wsgi import WSGIMiddleware

    return WSGIMiddleware(load(target()))


def make_wsgipool() -> Any:
    from wsgipool import WsgiToAsgi

    return WsgiToAsgi(target(), workers=int(os.environ.get("BENCH_WORKERS", "2")))
