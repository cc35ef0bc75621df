"""uvicorn's server, with the TLS handshake held to the header timeout.

asyncio gives a TLS handshake 60 s (``ssl_handshake_timeout``) and uvicorn passes no
other value, so a connection that never finishes its handshake would hold its slot three
times as long as a plain one that never sends its head (``header_timeout``). This
subclass hands the same bound to the loop's ``create_server`` while uvicorn starts.
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
            method = getattr(loop, name)
            setattr(loop, name, functools.partial(method, ssl_handshake_timeout=timeout))
        try:
            await super().startup(sockets)
        finally:  # the loop's own methods again
            for name in ("create_server", "create_unix_server"):
                delattr(loop, name)
