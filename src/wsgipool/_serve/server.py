"""uvicorn's server, with the TLS handshake held to the header timeout.

asyncio gives a TLS handshake 60 s (``ssl_handshake_timeout``) and uvicorn passes no
other value, so a connection that never finishes its handshake would hold its slot three
times as long as a plain one that never sends its head (``header_timeout``). This
subclass hands the same bound to the loop's ``create_server`` while uvicorn starts, for
the servers made with TLS only: the lifespan runs meanwhile, and a plain server it starts
(the admin listener) must not get a handshake timeout (uvloop refuses one without TLS).
"""

from __future__ import annotations

import asyncio
import functools
import socket
from typing import Any

import uvicorn


class EdgeServer(uvicorn.Server):
    """A uvicorn server whose TLS handshakes must end within ``handshake_timeout``."""

    def __init__(self, config: uvicorn.Config, handshake_timeout: float | None) -> None:
        super().__init__(config)
        self.handshake_timeout = handshake_timeout

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        timeout = self.handshake_timeout
        if timeout is None or not self.config.is_ssl:
            await super().startup(sockets)
            return
        loop: Any = asyncio.get_running_loop()
        for name in ("create_server", "create_unix_server"):
            setattr(loop, name, _bounded(getattr(loop, name), timeout))
        try:
            await super().startup(sockets)
        finally:  # the loop's own methods again
            for name in ("create_server", "create_unix_server"):
                delattr(loop, name)


def _bounded(create: Any, timeout: float) -> Any:
    """``create`` (a loop's ``create_server``), with ``ssl_handshake_timeout`` for a server
    made with TLS."""

    @functools.wraps(create)
    def create_server(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", timeout)
        return create(*args, **kwargs)

    return create_server
