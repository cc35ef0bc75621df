"""The admin listener of ``wsgipool serve`` (``--admin-bind``): the pages about the inside.

``/-/status``, the metrics and the probes' full bodies name pids, memory, request counts
and the app's last import error: an operator's business, not the internet's. They are
answered here, on an address of their own (loopback, a port that no Service or proxy
exposes, or a unix socket), while the app's port keeps only the bare probes.

A small HTTP/1.0-style server on the same event loop, started with the lifespan: one
request per connection, a head of at most :data:`HEAD_LIMIT` bytes read within
:data:`HEAD_TIMEOUT` seconds, every answer closes the connection. It serves only what the
front already renders, so it needs none of a full server's features.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import ipaddress
import logging
import socket
from typing import Protocol
from urllib.parse import unquote

import anyio

from .._types import Message, Receive, Scope, Send
from .access import ASGIApp
from .host import split_address

log = logging.getLogger("wsgipool.cli")

#: Largest request head accepted, and how long it may take to arrive.
HEAD_LIMIT = 8192
HEAD_TIMEOUT = 10.0
#: Connections served at once (an operator's scraper and a few people), and how long one
#: may last with its answer written: past either the connection is dropped.
MAX_CONNECTIONS = 64
CONNECTION_TIME = 30.0
_MISSING = b"not found\n"


def private_address(address: str) -> bool:
    """A unix socket or a loopback address: reachable from this host only."""
    if address.startswith("unix:"):
        return True
    host, _ = split_address(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_public(address: str) -> None:
    """Any address is allowed (Prometheus scrapes a pod's own IP), but said out loud."""
    if not private_address(address):
        log.warning(
            "the admin listener on %s shows pids, memory and errors: make sure only "
            "operators and the metrics scraper reach it",
            address,
        )


class Pages(Protocol):
    """What the admin listener needs of the front's observer."""

    async def answer(self, scope: Scope, send: Send, admin: bool = False) -> bool: ...


class AdminServer:
    """ASGI middleware: serves ``pages`` on ``sock`` for as long as the lifespan runs."""

    def __init__(self, app: ASGIApp, sock: socket.socket, pages: Pages) -> None:
        self.app = app
        self.sock = sock
        self.pages = pages
        self.open = 0  # connections now

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.serve)
            await self.app(scope, receive, send)
            tg.cancel_scope.cancel()

    async def serve(self) -> None:
        if self.sock.family == socket.AF_UNIX:
            server = await asyncio.start_unix_server(self.handle, sock=self.sock, limit=HEAD_LIMIT)
        else:
            server = await asyncio.start_server(self.handle, sock=self.sock, limit=HEAD_LIMIT)
        async with server:
            await server.serve_forever()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request, one answer, then the connection closes; at most
        :data:`MAX_CONNECTIONS` at once, each within :data:`CONNECTION_TIME` (a client
        that never reads its answer holds no descriptor of the front's for long)."""
        if self.open >= MAX_CONNECTIONS:
            writer.transport.abort()
            return
        self.open += 1
        try:
            await asyncio.wait_for(self.exchange(reader, writer), CONNECTION_TIME)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):  # fmt: skip
            writer.transport.abort()
        finally:
            self.open -= 1

    async def exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        status, headers, body = await self.respond(head)
        lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}".encode()]
        lines += [name + b": " + value for name, value in headers]
        lines += [b"connection: close", b"", b""]
        writer.write(b"\r\n".join(lines) + body)
        await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    async def respond(self, head: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The answer of the pages to a request head (404 for any other path)."""
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[1].startswith(b"/"):
            return 400, [(b"content-length", b"0")], b""
        method, target = parts[0].decode("latin-1"), parts[1].decode("latin-1")
        path, _, query = target.partition("?")
        scope: Scope = {
            "type": "http", "method": method, "path": unquote(path), "root_path": "",
            "query_string": query.encode("latin-1"), "headers": [], "http_version": "1.1",
        }  # fmt: skip
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        if not await self.pages.answer(scope, send, admin=True):
            return 404, [(b"content-type", b"text/plain"), (b"content-length", b"10")], _MISSING
        start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
        return int(start["status"]), list(start.get("headers", ())), body
