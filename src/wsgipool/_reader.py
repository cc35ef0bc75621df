"""Reading a worker's pipe from the event loop, cheaply on asyncio.

``anyio.wait_readable`` registers the descriptor with the loop and removes it again on
every call, which on asyncio costs more than the rest of a small request. So on asyncio
the pipe stays registered and is read in the loop's callback, as asyncio's own pipe
transports do; reading pauses as soon as decoded frames wait for a consumer, so a slow
client still holds back the worker. Other backends (trio) use ``anyio.wait_readable``.
"""

from __future__ import annotations

import asyncio
import contextlib

import anyio

from ._errors import WorkerError, WorkerGoneError
from ._protocol import Frame, FrameReader

_EXPIRED = object()


def _expire(waiter: asyncio.Future[object]) -> None:
    if not waiter.done():
        waiter.set_result(_EXPIRED)


class PipeReader:
    """Frames from one worker's pipe; one consumer at a time."""

    __slots__ = ("_decoder", "_error", "_frames", "_loop", "_paused", "_waiter", "fd", "name")

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        self._decoder = FrameReader()
        self._frames: list[Frame] = []
        self._error: WorkerError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused = True
        self._waiter: asyncio.Future[object] | None = None

    @property
    def broken(self) -> bool:
        """The pipe reached its end or failed (seen on asyncio even while idle)."""
        return self._error is not None and not self._frames

    async def read(self, patience: float | None = None) -> list[Frame] | None:
        """At least one whole frame; WorkerGoneError at end of file.

        With ``patience``, None when no frame came within that many seconds (a timer
        callback on asyncio, far cheaper than a cancel scope).
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if patience is None:
                return await self._read_portable()
            with anyio.move_on_after(patience):
                return await self._read_portable()
            return None
        if loop is not self._loop:
            self._attach(loop)
        while not self._frames:
            if self._error is not None:
                raise self._error
            if self._paused:
                self._resume()
            self._waiter = waiter = loop.create_future()
            timer = None if patience is None else loop.call_later(patience, _expire, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            if waiter.result() is _EXPIRED and not self._frames and self._error is None:
                return None
        frames, self._frames = self._frames, []
        return frames

    async def _read_portable(self) -> list[Frame]:
        while not self._frames:
            if self._error is not None:
                raise self._error
            try:
                self._receive()
            except BlockingIOError:
                try:
                    await anyio.wait_readable(self.fd)
                except (anyio.ClosedResourceError, OSError, ValueError):
                    if self._error is None:
                        self._error = WorkerGoneError(f"{self.name}: pipe closed")
        frames, self._frames = self._frames, []
        return frames

    def _receive(self) -> None:
        """One read; decoded frames and errors are kept for the consumer."""
        try:
            self._frames += self._decoder.read_from(self.fd)
        except EOFError:
            self._error = WorkerGoneError(f"{self.name} closed its pipe")
        except WorkerError as exc:
            self._error = exc
        except BlockingIOError:
            raise
        except OSError as exc:
            self._error = WorkerGoneError(f"{self.name}: {exc}")

    def _on_readable(self) -> None:
        try:
            self._receive()
        except BlockingIOError:
            return
        if self._waiter is not None and (self._frames or self._error):
            if not self._waiter.done():
                self._waiter.set_result(None)
        elif self._frames or self._error:
            self._pause()  # nobody is reading: leave the rest in the pipe

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.close()
        self._loop = loop
        self._paused = True

    def _resume(self) -> None:
        assert self._loop is not None
        self._loop.add_reader(self.fd, self._on_readable)
        self._paused = False

    def _pause(self) -> None:
        if not self._paused and self._loop is not None:
            with contextlib.suppress(Exception):  # the loop may be closed already
                self._loop.remove_reader(self.fd)
        self._paused = True

    def abort(self, error: WorkerError) -> None:
        """The pipe is about to be closed: wake a waiting reader with ``error``."""
        if self._error is None:
            self._error = error
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self.close()

    def close(self) -> None:
        """Unregister from the loop; call before the descriptor is closed."""
        self._pause()
        self._loop = None
