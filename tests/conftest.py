"""Fixtures every test may use: both anyio backends, a real uvicorn on loopback, ASGI calls."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from support import LiveServer


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def serve() -> Iterator[Any]:
    """``with serve(app) as server:`` runs uvicorn for the duration of the block."""
    servers: list[LiveServer] = []

    def start(app: Any, **options: Any) -> LiveServer:
        server = LiveServer(app, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.thread.is_alive():
            server.__exit__()
