"""What differs between event loops: reading a worker's pipe, and deferring a callback.

Each has a portable anyio path and an asyncio fast path beside it, chosen once.

Both have one interface: ``read(timeout)`` returns the whole frames that arrived, or None
when ``timeout`` passed (or :meth:`PipeReader.interrupt` asked the caller to look at its
deadline again); the end of the pipe is :class:`WorkerGoneError`.

:class:`PipeReader` waits with ``anyio.wait_readable`` inside a cancel scope, which works
on every backend. On asyncio that registers the descriptor with the loop and removes it
again on every call, which costs more than the rest of a small request, so
:class:`AsyncioPipeReader` keeps the pipe registered and reads in the loop's callback,
as asyncio's own pipe transports do, and times out with an alarm
(:mod:`wsgipool._pool.alarms`, cheap to cancel) instead of a cancel scope. Reading pauses
as soon as decoded frames wait for a consumer, so a slow consumer still holds back the
worker. :func:`open_reader` picks one per worker, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
from collections.abc import Awaitable, Callable
from functools import partial

import anyio

from .._errors import WorkerError, WorkerGoneError
from .._wire.frames import Frame, FrameReader
from .alarms import alarms_of

#: The front reads up to this much of a worker's pipe at once (its whole pipe buffer).
READ_SIZE = 1024 * 1024


class PipeReader:
    """Frames from one worker's pipe; one consumer at a time (any anyio backend)."""

    __slots__ = ("_decoder", "_error", "_frames", "_scope", "fd", "name")

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        self._decoder = FrameReader(size=READ_SIZE)
        self._frames: list[Frame] = []
        self._error: WorkerError | None = None
        self._scope: anyio.CancelScope | None = None

    @property
    def broken(self) -> bool:
        """The pipe reached its end or failed, and every frame before that was taken."""
        return self._error is not None and not self._frames

    def _take(self) -> list[Frame]:
        frames, self._frames = self._frames, []
        return frames

    async def read(self, timeout: float | None = None) -> list[Frame] | None:
        """At least one whole frame, or None once ``timeout`` seconds passed."""
        with anyio.CancelScope() as self._scope:
            if timeout is not None:
                self._scope.deadline = anyio.current_time() + timeout
            try:
                while not self._frames:
                    if self._error is not None:
                        raise self._error
                    try:
                        self._receive()
                    except BlockingIOError:
                        await self._wait()
                return self._take()
            finally:
                self._scope = None
        return None

    async def _wait(self) -> None:
        try:
            await anyio.wait_readable(self.fd)
        except (anyio.ClosedResourceError, OSError, ValueError):
            if self._error is None:
                self._error = WorkerGoneError(f"{self.name}: pipe closed")

    def interrupt(self) -> None:
        """Make a waiting :meth:`read` return None now (its caller's deadline changed)."""
        if self._scope is not None:
            self._scope.cancel()

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

    def abort(self, error: WorkerError) -> None:
        """The pipe is about to be closed: a waiting reader sees ``error``."""
        if self._error is None:
            self._error = error
        self.close()

    def close(self) -> None:
        """Forget the event loop; call before the descriptor is closed."""


_EXPIRED = object()


def _expire(waiter: asyncio.Future[object]) -> None:
    if not waiter.done():
        waiter.set_result(_EXPIRED)


class AsyncioPipeReader(PipeReader):
    """The same reader, registered with the asyncio loop for as long as it is read."""

    __slots__ = ("_loop", "_paused", "_waiter")

    def __init__(self, fd: int, name: str) -> None:
        super().__init__(fd, name)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused = True
        self._waiter: asyncio.Future[object] | None = None

    async def read(self, timeout: float | None = None) -> list[Frame] | None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # the pool moved to another backend
            return await super().read(timeout)
        if loop is not self._loop:
            self._attach(loop)
        while not self._frames:
            if self._error is not None:
                raise self._error
            if self._paused:
                self._resume()
            self._waiter = waiter = loop.create_future()
            timer = None
            if timeout is not None and not math.isinf(timeout):
                timer = alarms_of(loop).later(timeout, partial(_expire, waiter))
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            if waiter.result() is _EXPIRED and not self._frames and self._error is None:
                return None
        return self._take()

    def interrupt(self) -> None:
        if self._waiter is not None:
            _expire(self._waiter)

    def _on_readable(self) -> None:
        if self._waiter is None and (self._frames or self._error is not None):
            # Nobody took the last read yet: leave the rest in the pipe. Pausing only now,
            # not right after that read, spares a response that came before its reader
            # (the pool hands a queued request to its worker itself) a remove and an add.
            self._pause()
            return
        try:
            self._receive()
        except BlockingIOError:
            return
        if self._waiter is not None and (self._frames or self._error):
            if not self._waiter.done():
                self._waiter.set_result(None)
        elif self._error is not None:
            self._pause()  # the end of the pipe stays readable: nothing more to read

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
        if self._error is None:
            self._error = error
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self.close()

    def close(self) -> None:
        self._pause()
        self._loop = None


def open_reader(fd: int, name: str) -> PipeReader:
    """The reader for a worker created under the running backend."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return PipeReader(fd, name)
    return AsyncioPipeReader(fd, name)


async def wait_until_woken(
    body: Callable[[], Awaitable[object]], delay: float | None, woken: Callable[[Wake], None]
) -> bool:
    """Run ``body`` until it returns (True), or until ``delay`` seconds pass or the
    :data:`Wake` handed to ``woken`` is called (False).

    On asyncio the wake cancels the waiting task itself, and the wait takes back that
    one cancellation (``Task.uncancel``, as ``asyncio.timeout`` does, so a cancellation
    from outside still propagates); elsewhere an anyio cancel scope cancelled from a loop
    callback. Both cost far less than a task per waiting request.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return await _wait_portable(body, delay, woken)
    task = asyncio.current_task(loop)
    if task is None or sys.version_info < (3, 11):  # no Task.uncancel before 3.11
        return await _wait_portable(body, delay, woken)
    cancelling = task.cancelling()
    state = _WAITING

    def expire() -> None:
        nonlocal state
        if state is _WAITING or state is _WAKING:
            state = _WOKEN
            task.cancel()

    def wake() -> None:
        nonlocal state
        if state is _WAITING:
            state = _WAKING
            loop.call_soon(expire)  # a cancellation asked for meanwhile comes first

    timer = None if delay is None or math.isinf(delay) else alarms_of(loop).later(delay, expire)
    try:
        woken(wake)
        await body()
        if state is _WOKEN:
            task.uncancel()  # woken just as the body returned: that cancellation is ours
        return True
    except asyncio.CancelledError:
        if state is _WOKEN and task.uncancel() <= cancelling:
            return False
        raise
    finally:
        state = _OVER
        if timer is not None:
            timer.cancel()


#: How a wait on asyncio stands: only a wake or the delay moves it on from waiting, and
#: its cancellation reaches the task one loop callback later, as a timeout's would.
_WAITING, _WAKING, _WOKEN, _OVER = object(), object(), object(), object()


async def _wait_portable(
    body: Callable[[], Awaitable[object]], delay: float | None, woken: Callable[[Wake], None]
) -> bool:
    with anyio.CancelScope() as scope:
        if delay is not None:
            scope.deadline = anyio.current_time() + delay
        woken(lambda: call_soon(scope.cancel))
        await body()
        return True
    return False


#: Ends a :func:`wait_until_woken` early; safe to call more than once, or too late.
Wake = Callable[[], None]


def call_soon(callback: Callable[[], object]) -> None:
    """Run ``callback`` from the event loop rather than from the current task.

    anyio's asyncio backend formats the calling task's repr into the reason of every
    cancellation it is asked for from inside a task, which costs more than the rest of
    a hand-off; from a plain loop callback there is no task to describe. Elsewhere
    (trio) cancelling is cheap and happens at once.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        callback()
    else:
        loop.call_soon(callback)
