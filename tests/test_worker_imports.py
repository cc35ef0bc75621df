"""A worker imports only the worker's room: none of the front, no event loop library.

The front (this process) has all of them loaded; a spawned worker starts from a fresh
interpreter, and a preload worker is a fork of the template, which imported the app.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from asgi_helpers import call_asgi
from wsgipool import WsgiToAsgi

pytestmark = pytest.mark.anyio

#: What of the package a worker may import, by prefix: its own room, the wire, the kernel.
WORKER_ROOMS = ("wsgipool._worker", "wsgipool._wire")
KERNEL = {"wsgipool", "wsgipool._errors", "wsgipool._types", "wsgipool._logging",
          "wsgipool._titles", "wsgipool._hooks"}  # fmt: skip
#: Libraries only the front needs.
FRONT_LIBRARIES = ("anyio", "asyncio", "trio", "sniffio", "uvicorn", "cloudpickle")


def outside_the_worker(modules: set[str]) -> list[str]:
    """The modules a worker must not have loaded."""
    ours = {name for name in modules if name.partition(".")[0] == "wsgipool"}
    return sorted(
        {name for name in ours - KERNEL if not name.startswith(WORKER_ROOMS)}
        | {name for name in modules if name.partition(".")[0] in FRONT_LIBRARIES}
    )


def test_the_worker_entry_loads_only_its_rooms() -> None:
    # A fresh interpreter imports what ``python -m wsgipool._worker`` imports.
    code = "import json, sys; import wsgipool._worker.main; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)  # fmt: skip
    modules = set(json.loads(out.stdout))
    assert "wsgipool._worker.main" in modules
    assert outside_the_worker(modules) == []


@pytest.mark.parametrize("preload", [False, True], ids=["spawned", "forked"])
async def test_worker_has_no_front_modules(anyio_backend: str, preload: bool) -> None:
    assert {"anyio", "wsgipool._front.adapter", "wsgipool._pool.pool"} <= set(sys.modules)
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
    assert outside_the_worker(modules) == []
    assert "apps" in modules
