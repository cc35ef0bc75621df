"""Requests the front refuses before the app (or a worker) sees them, and their count.

:func:`refusal` looks at an ASGI scope alone: ``CONNECT`` (a WSGI app cannot tunnel),
both ``Content-Length`` and ``Transfer-Encoding`` (the two framings disagree: the
smuggling of a second request rides on that), and gunicorn's three header limits. The
embedded server of ``wsgipool serve`` enforces the limits while the bytes arrive (see
``_edge.py``); this is the same rule applied again on every ASGI server, so hypercorn,
Granian or uvicorn used directly refuse the same requests.

:class:`Refusals` counts refused requests and closed connections for the metrics and the
status page, and logs them at a rate that cannot flood the log.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

from .._types import Message, Scope

log = logging.getLogger("wsgipool.edge")

#: Methods a WSGI app may be offered (sent with 405).
ALLOW = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
#: Seconds between two log lines about refusals of one kind.
LOG_EVERY = 10.0
#: Reason phrases of the front's own answers.
PHRASES = {
    400: "Bad Request",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Payload Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: its status, a reason for the metrics, a text for people."""

    status: int
    reason: str
    detail: str

    def response(self) -> bytes:
        """The whole HTTP/1.1 response, for a server layer that writes bytes."""
        head = b"HTTP/1.1 %d %s\r\n" % (self.status, PHRASES[self.status].encode())
        return (
            head + b"".join(b"%s: %s\r\n" % pair for pair in self.headers()) + b"\r\n" + self.body
        )

    @property
    def body(self) -> bytes:
        return f"{PHRASES[self.status]}: {self.detail}\n".encode()

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(self.body)),
            (b"connection", b"close"),
        ]
        return [*headers, (b"allow", ALLOW)] if self.status == 405 else headers

    def messages(self) -> tuple[Message, Message]:
        """The answer as ASGI messages; ``connection: close`` makes the server close."""
        start = {"type": "http.response.start", "status": self.status, "headers": self.headers()}
        return start, {"type": "http.response.body", "body": self.body}


@dataclass(frozen=True)
class Limits:
    """gunicorn's header limits (0: no limit)."""

    request_line: int = 4094
    fields: int = 100
    field_size: int = 8190

    @functools.cached_property
    def shortest_line(self) -> int:
        """No line of a head this long or shorter is over a limit."""
        sizes = [size for size in (self.request_line, self.field_size) if size]
        return min(sizes) if sizes else 1 << 62

    def line_refusal(self, length: int) -> Refusal | None:
        if self.request_line and length > self.request_line:
            return Refusal(414, "request_line", f"request line over {self.request_line} bytes")
        return None

    def field_refusal(self, size: int) -> Refusal | None:
        if self.field_size and size > self.field_size:
            return Refusal(431, "field_size", f"a header field over {self.field_size} bytes")
        return None

    def count_refusal(self, count: int) -> Refusal | None:
        if self.fields and count > self.fields:
            return Refusal(431, "fields", f"more than {self.fields} header fields")
        return None


CONNECT_REFUSED = Refusal(405, "connect", "CONNECT cannot be served by a WSGI app")


def refusal(scope: Scope, limits: Limits) -> Refusal | None:
    """Why the request of ``scope`` must not reach the app, or None."""
    method: str = scope.get("method", "GET")
    if method == "CONNECT":
        return CONNECT_REFUSED
    target = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "replace")
    query = scope.get("query_string", b"")
    line = len(method) + len(target) + (len(query) + 1 if query else 0) + len(" HTTP/1.1") + 1
    if line > limits.request_line > 0:
        return limits.line_refusal(line)
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    if len(headers) > limits.fields > 0:
        return limits.count_refusal(len(headers))
    largest, lengths, chunked = limits.field_size - 2, set(), False
    for name, value in headers:  # names are lowercase in ASGI
        if len(name) + len(value) > largest >= 0:
            return limits.field_refusal(len(name) + len(value) + 2)
        if name == b"content-length":
            lengths.add(value.strip())
        elif name == b"transfer-encoding":
            chunked = True
    if chunked and lengths:
        return Refusal(400, "framing", "both Content-Length and Transfer-Encoding")
    if len(lengths) > 1:
        return Refusal(400, "framing", "conflicting Content-Length headers")
    return None


def peer(client: object) -> str:
    """``("10.0.0.1", 5000)`` -> ``"10.0.0.1:5000"``, for the log."""
    if isinstance(client, (tuple, list)) and len(client) == 2:
        return f"{client[0]}:{client[1]}"
    return "an unknown peer" if client is None else str(client)


class Refusals:
    """Counts of refused requests (by status and reason) and of closed connections (by
    reason); one warning per kind every :data:`LOG_EVERY` seconds at most."""

    def __init__(self) -> None:
        self.requests: dict[tuple[int, str], int] = {}
        self.connections: dict[str, int] = {}
        self._logged: dict[str, tuple[float, int]] = {}  # kind -> (when, count then)

    def refused(self, found: Refusal, client: object = None) -> None:
        self.count(found.status, found.reason, found.detail, client)

    def count(self, status: int, reason: str, detail: str, client: object = None) -> None:
        """One request refused with ``status`` (the front's own refusals: 408, 413, ...)."""
        key = (status, reason)
        self.requests[key] = count = self.requests.get(key, 0) + 1
        self._log(f"{status} {reason}", count, "refused %d from %s: %s", status, peer(client),
                  detail)  # fmt: skip

    def closed(self, reason: str, detail: str, client: object = None) -> None:
        self.connections[reason] = count = self.connections.get(reason, 0) + 1
        self._log(reason, count, "closed a connection from %s: %s", peer(client), detail)

    def _log(self, kind: str, count: int, text: str, *args: object) -> None:
        now = time.monotonic()
        when, then = self._logged.get(kind, (-LOG_EVERY, 0))
        if now - when < LOG_EVERY:
            return
        self._logged[kind] = (now, count)
        more = f" ({count - then} like it since the last line)" if count - then > 1 else ""
        log.warning("%s%s", text % args, more)

    def total(self) -> int:
        return sum(self.requests.values()) + sum(self.connections.values())
