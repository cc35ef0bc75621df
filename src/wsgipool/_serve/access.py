"""The access log of ``wsgipool serve``: one line per request, in gunicorn's atoms.

uvicorn's own access line knows neither the response's size nor its duration, and has no
format to choose; this middleware times each request from its arrival to the last byte of
its response and writes one record to the ``wsgipool.access`` logger. The text is
``--access-log-format`` rendered with gunicorn's atoms (``%(h)s %(r)s %(s)s %(b)s
%(D)s %({x-request-id}o)s`` ...; an atom it does not know renders as ``-``); the record
also carries the entry as fields (``record.access``), which the JSON formatter writes.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from .._logging import request_id
from .._types import Message, Receive, Scope, Send
from .._wire.environ import cgi_environ

log = logging.getLogger("wsgipool.access")
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: gunicorn's default access log format.
DEFAULT_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


class Entry:
    """What an access line says about one finished request."""

    __slots__ = ("bytes", "headers", "scope", "seconds", "started", "status")

    def __init__(self, scope: Scope, started: float) -> None:
        self.scope = scope
        self.started = started  # time.time() at arrival
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.bytes = 0
        self.seconds = 0.0

    def request_header(self, name: str) -> str | None:
        wanted = name.lower().encode("latin-1")
        for key, value in self.scope.get("headers", ()):
            if key.lower() == wanted:
                return str(value.decode("latin-1"))
        return None

    def response_header(self, name: str) -> str | None:
        wanted = name.lower().encode("latin-1")
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    def client(self) -> str:
        client = self.scope.get("client")
        return str(client[0]) if client else "-"

    def fields(self, rid_header: str) -> dict[str, Any]:
        """The entry as JSON fields (the JSON formatter merges them into the line)."""
        rid = self.response_header(rid_header) if rid_header else None
        return {
            "method": self.scope.get("method", ""),
            "path": self.scope.get("path", ""),
            "query": self.scope.get("query_string", b"").decode("latin-1"),
            "status": self.status,
            "bytes": self.bytes,
            "duration": round(self.seconds, 6),
            "client": self.client(),
            "request_id": rid,
        }


class Atoms(Mapping[str, str]):
    """gunicorn's atoms of one entry, computed when the format asks for them."""

    def __init__(self, entry: Entry) -> None:
        self.entry = entry

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __getitem__(self, key: str) -> str:
        value = self.atom(key)
        return "-" if value is None or value == "" else value

    def atom(self, key: str) -> str | None:
        entry, scope = self.entry, self.entry.scope
        if key.startswith("{") and key[-2:-1] == "}" and len(key) > 3:
            name, kind = key[1:-2], key[-1]
            if kind == "i":
                return entry.request_header(name)
            if kind == "o":
                return entry.response_header(name)
            if kind == "e":
                return str(cgi_environ(scope, None).get(name) or "") or None
            return None
        micros = int(entry.seconds * 1_000_000)
        path = scope.get("path", "")
        raw = scope.get("raw_path")  # as the client sent it, as gunicorn's %(r)s shows it
        target = raw.decode("latin-1") if raw else path
        query = scope.get("query_string", b"").decode("latin-1")
        simple: dict[str, Any] = {
            "h": entry.client(),
            "l": "-",
            "u": basic_user(entry.request_header("authorization")),
            "t": time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(entry.started)),
            "r": f"{scope.get('method', '')} {target}{'?' + query if query else ''} "
            f"HTTP/{scope.get('http_version', '1.1')}",
            "s": str(entry.status),
            "m": scope.get("method"),
            "U": path,
            "q": query,
            "H": f"HTTP/{scope.get('http_version', '1.1')}",
            "b": str(entry.bytes) if entry.bytes else "-",
            "B": str(entry.bytes),
            "f": entry.request_header("referer"),
            "a": entry.request_header("user-agent"),
            "T": str(micros // 1_000_000),
            "D": str(micros),
            "M": str(micros // 1000),
            "L": f"{micros // 1_000_000}.{micros % 1_000_000:06d}",
            "p": f"<{os.getpid()}>",
        }
        return simple.get(key)


def basic_user(authorization: str | None) -> str | None:
    """The user name of a Basic ``Authorization`` header, as gunicorn's ``%(u)s``."""
    if not authorization or not authorization.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("latin-1")
    except (binascii.Error, ValueError):
        return None
    return decoded.partition(":")[0] or None


def render(log_format: str, entry: Entry) -> str:
    """``log_format`` with each atom of ``entry`` in place (a broken format: said so)."""
    try:
        return log_format % Atoms(entry)
    except (TypeError, ValueError, KeyError) as exc:
        return f"bad access log format ({exc}): {log_format!r}"


class AccessLog:
    """ASGI middleware: times each ``http`` request and logs it once it is over."""

    def __init__(self, app: ASGIApp, log_format: str, rid_header: str = "") -> None:
        self.app = app
        self.log_format = log_format
        self.rid_header = rid_header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        entry = Entry(scope, time.time())
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                entry.status = int(message["status"])
                entry.headers = list(message.get("headers", ()))
            elif kind == "http.response.body":
                entry.bytes += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        except Exception:
            entry.status = entry.status or 500  # the server answers 500 or cuts it off
            raise
        finally:
            entry.seconds = time.perf_counter() - started
            if log.isEnabledFor(logging.INFO):
                self.log(entry)

    def log(self, entry: Entry) -> None:
        """One record, in the request's id as its other lines are (the id was set inside)."""
        fields = entry.fields(self.rid_header)
        token = request_id.set(fields["request_id"])
        try:
            log.info("%s", render(self.log_format, entry), extra={"access": fields})
        finally:
            request_id.reset(token)
