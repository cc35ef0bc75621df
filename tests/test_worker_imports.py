"""A worker imports only the worker's room: none of the front, no event loop library.

The front (this process) has all of them loaded; a spawned worker starts from a fresh
interpreter, and a preload worker is a fork of the template, which imported the app.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from asgi_helpers import call_asgi
from wsgipool import WsgiToAsgi

pytestmark = pytest.mark.anyio

#: Everything of the package a worker may import (``_worker`` itself runs as __main__).
WORKER_ROOM = {
    "wsgipool",
    "wsgipool._environ",
    "wsgipool._errors",
    "wsgipool._loader",
    "wsgipool._logging",  # logging set-up, shared with the front: it imports only logging
    "wsgipool._protocol",
    "wsgipool._remote",  # an app's exception, pickled for the front
    "wsgipool._titles",
    "wsgipool._types",
    "wsgipool._worker",
    "wsgipool._wsgi",
}
FRONT_ONLY = {"anyio", "asyncio", "trio", "sniffio", "wsgipool._front", "wsgipool._pool"}


@pytest.mark.parametrize("preload", [False, True], ids=["spawned", "forked"])
async def test_worker_has_no_front_modules(anyio_backend: str, preload: bool) -> None:
    assert {"anyio", "wsgipool._front", "wsgipool._pool"} <= set(sys.modules)  # the front's
    app = WsgiToAsgi("apps:modules", workers=1, preload=preload)
    await app.start()
    try:
        (worker,) = app.stats().idle
        template = app.stats().template_pid
        messages = await call_asgi(app)
    finally:
        await app.aclose()
    assert messages[0]["status"] == 200
    seen = json.loads(b"".join(m.get("body", b"") for m in messages[1:]))
    assert seen["pid"] == worker.pid != os.getpid()
    if preload:
        assert template is not None
        assert seen["ppid"] == template != worker.pid  # a fork of the template
    else:
        assert seen["ppid"] == os.getpid()
    modules = set(seen["modules"])
    assert not modules & FRONT_ONLY, sorted(modules & FRONT_ONLY)
    ours = {name for name in modules if name.split(".")[0] == "wsgipool"}
    assert ours <= WORKER_ROOM, sorted(ours - WORKER_ROOM)
    assert "apps" in modules
