"""Fixtures every test may use: both anyio backends, real servers on loopback, ASGI calls."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support import SERVERS, Front, LiveServer, UvicornServer


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


@pytest.fixture
def front(tmp_path: Path) -> Iterator[Callable[..., Front]]:
    """``front("app:app", "-w", "1")`` runs ``wsgipool serve`` in a subprocess; every one
    started is killed at the end of the test."""
    started: list[Front] = []

    def start(*args: str, **kwargs: Any) -> Front:
        started.append(Front(tmp_path, *args, **kwargs))
        return started[-1]

    yield start
    for one in started:
        one.stop(signal.SIGKILL)
