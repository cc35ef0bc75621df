"""The access log of ``wsgipool serve``: one line per request, in gunicorn's atoms.

uvicorn's own access line knows neither the response's size nor its duration, and has no
format to choose; this middleware times each request from its arrival to the last byte of
its response and writes one record to the ``wsgipool.access`` logger. The text is
``--access-log-format`` rendered with gunicorn's atoms (``%(h)s %(r)s %(s)s %(b)s
%(D)s %({x-request-id}o)s`` ...; an atom it does not know renders as ``-``); the record
also carries the entry as fields (``record.access``), which the JSON formatter writes.
The format is read once (:class:`AccessFormat`): a format that cannot render is refused at
start, and each line computes only the atoms its format names.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .._errors import ConfigError
from .._logging import printable, request_id
from .._types import Message, Receive, Scope, Send
from .._wire.environ import cgi_environ, request_target

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


def _duration(entry: Entry, unit: int) -> str:
    return str(int(entry.seconds * 1_000_000) // unit)


def _protocol(entry: Entry) -> str:
    return f"HTTP/{entry.scope.get('http_version', '1.1')}"


def _request_line(entry: Entry) -> str:
    """Method, the path as the client sent it (as gunicorn shows it), the query, protocol."""
    scope = entry.scope
    return f"{scope.get('method', '')} {request_target(scope)} {_protocol(entry)}"


#: gunicorn's one-letter atoms, each computed only if the format uses it.
LETTERS: dict[str, Callable[[Entry], Any]] = {
    "h": Entry.client,
    "l": lambda entry: "-",
    "u": lambda entry: basic_user(entry.request_header("authorization")),
    "t": lambda entry: time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(entry.started)),
    "r": _request_line,
    "s": lambda entry: str(entry.status),
    "m": lambda entry: entry.scope.get("method"),
    "U": lambda entry: entry.scope.get("path"),
    "q": lambda entry: entry.scope.get("query_string", b"").decode("latin-1"),
    "H": _protocol,
    "b": lambda entry: str(entry.bytes) if entry.bytes else None,
    "B": lambda entry: str(entry.bytes),
    "f": lambda entry: entry.request_header("referer"),
    "a": lambda entry: entry.request_header("user-agent"),
    "T": lambda entry: _duration(entry, 1_000_000),
    "M": lambda entry: _duration(entry, 1000),
    "D": lambda entry: _duration(entry, 1),
    "L": lambda entry: f"{_duration(entry, 1_000_000)}.{_duration(entry, 1)[-6:]:0>6}",
    "p": lambda entry: f"<{os.getpid()}>",
}
_ATOM = re.compile(r"%\(([^)]*)\)")


def atom(key: str, entry: Entry) -> str:
    """One atom of ``entry``: a letter, or ``{name}`` and ``i``/``o``/``e``; ``-`` if none."""
    if key.startswith("{") and key[-2:-1] == "}" and len(key) > 3:
        name, kind = key[1:-2], key[-1]
        if kind == "i":
            value = entry.request_header(name)
        elif kind == "o":
            value = entry.response_header(name)
        else:
            value = cgi_environ(entry.scope, None).get(name) if kind == "e" else None
    else:
        letter = LETTERS.get(key)
        value = None if letter is None else letter(entry)
    return "-" if value is None or value == "" else printable(str(value))


class AccessFormat:
    """An access log format, read once: only the atoms it names are computed per line."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.keys = tuple(dict.fromkeys(_ATOM.findall(text)))
        try:
            text % dict.fromkeys(self.keys, "-")
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"--access-log-format {text!r}: {exc}") from None

    def render(self, entry: Entry) -> str:
        return self.text % {key: atom(key, entry) for key in self.keys}


def basic_user(authorization: str | None) -> str | None:
    """The user name of a Basic ``Authorization`` header, as gunicorn's ``%(u)s``."""
    if not authorization or not authorization.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("latin-1")
    except (binascii.Error, ValueError):
        return None
    return decoded.partition(":")[0] or None


class AccessLog:
    """ASGI middleware: times each ``http`` request and logs it once it is over."""

    def __init__(self, app: ASGIApp, log_format: AccessFormat, rid_header: str = "") -> None:
        self.app = app
        self.format = log_format
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
            log.info("%s", self.format.render(entry), extra={"access": fields})
        finally:
            request_id.reset(token)
