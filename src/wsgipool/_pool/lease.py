"""A lease: one request's use of one worker, from dispatch to release.

The pool hands out one lease per request (``Pool.acquire``). The request talks to its
worker only through the lease, and the lease alone holds what belongs to the request
rather than to the process: the deadline (which pauses while the client is slow to take
the response and shortens when the client leaves), the kill when the worker is late or
broken, and the ending, which happens exactly once: released (served), given back (the
worker never saw the request), or discarded (killed and replaced, with a reason).

Deadlines are ``time.monotonic()`` values, and the reads enforce them: a read waits no
longer than the time left, so no timer task or watchdog tracks the request.
"""

from __future__ import annotations

import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from .._errors import LeaseEndedError, WorkerTimeoutError
from .process import KILL_GRACE

if TYPE_CHECKING:
    from .._wire.frames import Frame
    from .process import WorkerProcess


class Owner(Protocol):
    """What a lease needs of the pool that issued it."""

    def release(self, worker: WorkerProcess, served: bool) -> None: ...

    def discard(self, worker: WorkerProcess, reason: str) -> None: ...


class Lease:
    """One request's hold on one worker."""

    __slots__ = ("_owner", "_paused_left", "client_gone", "deadline", "ended", "request_sent",
                 "timed_out", "timeout", "worker")  # fmt: skip

    def __init__(self, owner: Owner, worker: WorkerProcess, timeout: float | None) -> None:
        self._owner = owner
        self.worker = worker
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self._paused_left: float | None = None
        self.timed_out = False  # the deadline passed: the worker is killed, never reused
        self.client_gone = False
        self.ended = False
        self.request_sent = False  # the pool wrote the request's first frames with the hand-over

    def __repr__(self) -> str:
        return f"<lease of {self.worker!r}>"

    # -- the worker's channel --------------------------------------------------------

    def send(self, *pieces: bytes | bytearray | memoryview) -> Coroutine[Any, Any, None]:
        """Whole frames to the worker (see ``WorkerProcess.write``), once awaited; refused
        once the lease ended, since the worker may be serving another request by then."""
        if self.ended:
            raise LeaseEndedError(f"{self!r} ended")
        return self.worker.write(*pieces)  # no coroutine of our own around it

    def try_send(self, frame: bytes) -> bool:
        """A small frame to the worker now if its pipe has room, else nothing (False)."""
        return not self.ended and self.worker.try_write(frame)

    async def read(self, patience: float | None = None) -> list[Frame] | None:
        """The next frames from the worker; None if ``patience`` seconds passed first.

        Past the deadline this is :class:`WorkerTimeoutError`, and the lease is marked
        timed out (the caller then fails it, which kills the worker).
        """
        reader = self.worker.reader
        while True:
            wait = patience
            if self.deadline is not None:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    self.timed_out = True
                    raise WorkerTimeoutError(self.late())
                wait = left if wait is None else min(wait, left)
            frames = await reader.read(wait)
            if frames is not None:
                return frames
            if patience is not None and not self._expired():
                return None  # patience ran out (or was interrupted): the caller decides

    def _expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def late(self) -> str:
        """Why the deadline passed, for the log and the error."""
        if self.client_gone:
            return "did not stop after the client left"
        return f"no response within {self.timeout}s"

    # -- the deadline ----------------------------------------------------------------

    def pause(self) -> None:
        """Stop the clock while the front waits on the client (not the app's time)."""
        if self.deadline is not None and self._paused_left is None:
            self._paused_left = self.deadline - time.monotonic()
            self.deadline = None

    def resume(self) -> None:
        if self._paused_left is not None:
            self.deadline = time.monotonic() + self._paused_left
            self._paused_left = None

    def client_left(self, grace: float) -> None:
        """The client is gone: the worker gets ``grace`` seconds to stop its response."""
        self.client_gone = True
        limit = time.monotonic() + grace
        if self._paused_left is not None:
            self._paused_left = min(self._paused_left, grace)
        elif self.deadline is None or limit < self.deadline:
            self.deadline = limit
            self.worker.reader.interrupt()  # a read in progress re-reads the deadline

    # -- the ending ------------------------------------------------------------------

    def release(self, served: bool = True) -> None:
        """The worker goes back to the pool (or is recycled); ``served=False``: it never
        saw the request, and goes back as it was.

        Whoever else writes to the worker for this request must be done or hold off
        (see ``Relay``): from here on :meth:`send` refuses.
        """
        if not self.ended:
            self.ended = True
            self._owner.release(self.worker, served)

    async def kill(self) -> None:
        """Stop the worker now: SIGTERM with a grace if it was late, else SIGKILL."""
        with anyio.CancelScope(shield=True):
            await self.worker.terminate(KILL_GRACE if self.timed_out else 0)

    def discard(self, reason: str) -> None:
        """The worker is broken or late: it is killed (if still running) and replaced."""
        if not self.ended:
            self.ended = True
            self._owner.discard(self.worker, reason)
