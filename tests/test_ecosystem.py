"""One adapter, many hosts: uvicorn, hypercorn (asyncio and trio), Granian, and mounted
inside Starlette; each a real server on 127.0.0.1 with a real HTTP client."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import free_port, hypercorn_thread, wait_for
from wsgipool import WsgiToAsgi

TESTS = Path(__file__).parent


def check_served(url: str, prefix: str = "") -> None:
    """The app answers through the pool, and the front answers its probes."""
    with httpx.Client(base_url=url, timeout=30) as client:
        environ = client.get(prefix + "/some/path?q=1").json()
        assert environ["PATH_INFO"] == "/some/path"
        assert environ["QUERY_STRING"] == "q=1"
        assert environ["SCRIPT_NAME"] == prefix
        probe = client.get(prefix + "/-/readyz")
        assert probe.status_code == 200
        assert probe.json()["workers"] == 1


def test_uvicorn(serve: Any) -> None:
    app = WsgiToAsgi("apps:environ_json", workers=1, health=True)
    with serve(app) as server:
        check_served(server.url)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_hypercorn(backend: str) -> None:
    app = WsgiToAsgi("apps:environ_json", workers=1, health=True)
    with hypercorn_thread(app, backend) as url:

        def up() -> bool:
            try:
                return httpx.get(url + "/-/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, what=f"hypercorn ({backend})")
        check_served(url)


def test_granian(tmp_path: Path) -> None:
    (tmp_path / "granian_app.py").write_text(
        "from wsgipool import WsgiToAsgi\n"
        "app = WsgiToAsgi('apps:environ_json', workers=1, health=True)\n"
    )
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(TESTS)])}
    command = [
        sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1", "--no-log", "granian_app:app",
    ]  # fmt: skip
    log = tmp_path / "granian.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(url + "/-/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, what="granian")
        check_served(url)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_mounted_in_starlette(serve: Any) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    legacy = WsgiToAsgi("apps:environ_json", workers=1, health=True)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with legacy:  # start the workers with the server, stop them with it
            yield

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("native ASGI")

    app = Starlette(routes=[Route("/", home), Mount("/legacy", app=legacy)], lifespan=lifespan)
    with serve(app) as server:
        check_served(server.url, prefix="/legacy")
        with server.client() as client:
            assert client.get("/").text == "native ASGI"
            assert client.get("/-/readyz").status_code == 404  # Starlette's, not the pool's
