"""One adapter, many hosts: uvicorn, hypercorn (asyncio and trio), Granian, and mounted
inside Starlette; each a real server on 127.0.0.1 with a real HTTP client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import (
    HypercornServer,
    ServerProcess,
    free_port,
    host_command,
    python_env,
)
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
    with HypercornServer(app, backend) as server:
        check_served(server.url)


def test_granian(tmp_path: Path) -> None:
    (tmp_path / "granian_app.py").write_text(
        "from wsgipool import WsgiToAsgi\n"
        "app = WsgiToAsgi('apps:environ_json', workers=1, health=True)\n"
    )
    port = free_port()
    command = [*host_command("granian", "granian_app:app", port), "--no-log"]
    server = ServerProcess(command, tmp_path / "granian.log", port, tmp_path,
                           python_env(tmp_path, TESTS))  # fmt: skip
    try:
        server.ready()
        check_served(server.url)
    finally:
        assert server.stop() == 0, server.output()


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
