"""Writes that leave together: a response head with its first body chunk, in one send.

uvicorn writes a response's head and its body with separate ``transport.write`` calls,
and each write to a socket with room is a system call of its own (asyncio and uvloop send
at once). The edge hands uvicorn's protocol this wrapper instead of the transport: a
small write waits until the end of the loop iteration it was made in, and a write that
follows it in the same iteration leaves with it, joined. The front sends a small
response's start and body back to back, so it costs one send instead of two; a write
alone in its iteration leaves at the iteration's end, and a large one at once.
Everything else is the transport's own.
"""

from __future__ import annotations

import asyncio
from typing import Any

#: Largest write that waits for a companion (and most bytes joined into one): past this
#: a second system call costs less than copying the bytes together.
JOIN_UP_TO = 64 * 1024


class CorkedTransport:
    """A transport whose small writes wait for the next one, within one loop iteration."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.BaseTransport, loop: asyncio.AbstractEventLoop):
        self._transport: Any = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if len(held) + len(data) <= JOIN_UP_TO:
                self._transport.write(held + bytes(data))
                return
            self._transport.write(held)
            self._transport.write(data)
        elif len(data) >= JOIN_UP_TO or not data:
            self._transport.write(data)
        else:
            self._held = bytes(data)  # the caller may reuse its buffer meanwhile
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send what waits (at the end of its iteration, or before the transport closes)."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return int(self._transport.get_write_buffer_size()) + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:
        """Reading, flow control, extra info: the transport's own."""
        return getattr(self._transport, name)
