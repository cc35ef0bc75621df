"""Fixtures every test may use: both anyio backends, real servers on loopback, ASGI calls."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from support import SERVERS, LiveServer, UvicornServer


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _serving(factory: Callable[..., LiveServer]) -> Iterator[Callable[..., LiveServer]]:
    servers: list[LiveServer] = []

    def start(app: Any, **options: Any) -> LiveServer:
        server = factory(app, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.thread.is_alive():
            server.__exit__()


@pytest.fixture
def serve() -> Iterator[Callable[..., LiveServer]]:
    """``with serve(app) as server:`` runs uvicorn for the duration of the block."""
    yield from _serving(UvicornServer)


@pytest.fixture(params=list(SERVERS))
def serve_each(request: pytest.FixtureRequest) -> Iterator[Callable[..., LiveServer]]:
    """Like :func:`serve`, once with uvicorn (asyncio) and once with hypercorn on trio."""
    yield from _serving(SERVERS[request.param])
