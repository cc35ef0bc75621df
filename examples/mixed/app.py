"""Two WSGI apps, each in its own pool of workers, and a native ASGI app, in one server.

From the repository root:

    pip install ".[serve]"
    uvicorn --app-dir examples/mixed app:app

``/shop/...`` goes to ``legacy.shop`` (2 workers), ``/blog/...`` to ``legacy.blog``
(1 worker); everything else is answered by the ASGI function ``hello`` in the server's
own process. The WSGI apps are named by import string, so the server never imports them.
"""

from __future__ import annotations

import json
import os
from typing import Any

from wsgipool import WsgiToAsgi

shop = WsgiToAsgi("legacy:shop", workers=2)
blog = WsgiToAsgi("legacy:blog", workers=1)
MOUNTS = {"/shop": shop, "/blog": blog}


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = json.dumps({"app": "asgi", "pid": os.getpid(), "path": scope["path"]}).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Any, send: Any) -> None:
    """Start both pools with the server; stop them, gracefully, when it stops."""
    await receive()  # lifespan.startup
    try:
        await shop.start()
        await blog.start()
    except Exception as exc:  # e.g. an app that fails to import: its own error
        await send({"type": "lifespan.startup.failed", "message": str(exc)})
        await close_all()
        return
    await send({"type": "lifespan.startup.complete"})
    await receive()  # lifespan.shutdown
    await close_all()
    await send({"type": "lifespan.shutdown.complete"})


async def close_all() -> None:
    for mounted in MOUNTS.values():
        await mounted.aclose()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    root = scope.get("root_path", "")
    path = scope["path"][len(root) :] if scope["path"].startswith(root) else scope["path"]
    for prefix, mounted in MOUNTS.items():
        if path == prefix or path.startswith(prefix + "/"):
            # The mounted app sees the prefix as its root_path (its SCRIPT_NAME).
            await mounted({**scope, "root_path": root + prefix}, receive, send)
            return
    await hello(scope, receive, send)
