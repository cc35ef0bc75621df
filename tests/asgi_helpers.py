"""Drive an ASGI app directly, the way a server would, and collect what it sends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio


def http_scope(path: str = "/", method: str = "GET", **overrides: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    scope.update(overrides)
    return scope


async def call_asgi(
    app: Any,
    scope: dict[str, Any] | None = None,
    body: Sequence[bytes] = (b"",),
    disconnect_after: int | None = None,
    sent: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Send ``body`` as http.request messages; return every message the app sent.

    After the body, ``receive`` blocks like a real server until the response is complete,
    or, with ``disconnect_after=N``, reports ``http.disconnect`` once N messages were sent.
    Messages go to ``sent`` as they come, so a caller still has them if the app raises.
    """
    scope = scope or http_scope()
    sent = [] if sent is None else sent
    chunks = list(body)
    gone = anyio.Event()

    async def receive() -> dict[str, Any]:
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if disconnect_after is not None and len(sent) >= disconnect_after:
            gone.set()
        if message["type"] == "http.response.body" and not message.get("more_body"):
            gone.set()

    await app(scope, receive, send)
    return sent
