"""A lease: one request's use of one worker, from dispatch to release.

The pool hands out one lease per request (``Pool.acquire``). The request talks to its
worker only through the lease, and the lease alone holds what belongs to the request
rather than to the process: the deadline (which pauses while the client is slow to take
the response and shortens when the client leaves), the kill when the worker is late or
broken, and the ending, which happens exactly once: released (served), given back (the
worker never saw the request), or discarded (killed and replaced, with a reason).

Deadlines are ``time.monotonic()`` values, and the reads enforce them: a read waits no
longer than the time left, so no timer task or watchdog tracks the request. The same
reads log the stacks of a request still running after ``slow_request`` seconds, once.

A late worker's kill begins with an account of it: its stacks at the deadline (see
``stacks``) and, with ``timeout_grace``, an interrupt (``RequestTimeout`` raised in the
app) and up to that grace for the app to finish before it is killed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from .._errors import LeaseEndedError, WorkerError, WorkerTimeoutError
from .._wire.kinds import INTERRUPT_SIGNAL, End, Error
from .process import KILL_GRACE
from .stacks import indent, read_stacks

if TYPE_CHECKING:
    from .._wire.frames import Frame
    from .process import WorkerProcess

log = logging.getLogger("wsgipool.pool")


class Owner(Protocol):
    """What a lease needs of the pool that issued it."""

    def release(self, worker: WorkerProcess, served: bool) -> None: ...

    def discard(self, worker: WorkerProcess, reason: str) -> None: ...

    def count(self, event: str, label: str) -> None: ...


class About(Protocol):
    """What the request is, for the status page and the logs about its worker (read only
    when they need it: the exchange has it)."""

    @property
    def request_line(self) -> str: ...

    @property
    def client_address(self) -> str: ...


class Lease:
    """One request's hold on one worker."""

    __slots__ = ("_owner", "_paused_left", "about", "client_gone", "deadline", "ended",
                 "grace", "request_sent", "slow_at", "started", "timed_out", "timeout",
                 "worker")  # fmt: skip

    def __init__(
        self,
        owner: Owner,
        worker: WorkerProcess,
        timeout: float | None,
        grace: float | None = None,
        slow: float | None = None,
    ) -> None:
        self._owner = owner
        self.worker = worker
        self.timeout = timeout
        self.grace = grace  # timeout_grace: interrupt the app first, kill after this
        self.started = now = time.monotonic()
        self.deadline = None if timeout is None else now + timeout
        self.slow_at: float | None = None  # when a still running request is logged
        if slow is not None and (timeout is None or slow < timeout):
            self.slow_at = now + slow
        self.about: About | None = None  # the request, once the exchange said (describe)
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
            if self.slow_at is not None:
                left = self.slow_at - time.monotonic()
                if left <= 0:
                    await self._log_slow()
                    continue
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

    def describe(self, about: About) -> None:
        """What the worker is doing, for the status page and the logs about it."""
        self.about = about

    @property
    def request(self) -> str:
        """``"GET /path?query"`` ("" until described)."""
        return "" if self.about is None else self.about.request_line

    @property
    def client(self) -> str:
        return "" if self.about is None else self.about.client_address

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _what(self) -> str:
        worker = self.worker
        return f"worker {worker.id} (pid {worker.pid}) running {self.request or 'a request'}"

    async def _log_slow(self) -> None:
        """``slow_request``: the stacks of a request still running, once; it goes on."""
        self.slow_at = None
        ran = self.elapsed()
        stacks = await read_stacks(self.worker)
        if stacks is not None:
            self._owner.count("stacks", "slow_request")
        log.warning(
            "slow request: %s for %.1fs, still running; its stacks (most recent call first):\n%s",
            self._what(), ran, indent(stacks or "(the worker did not answer)"),
        )  # fmt: skip

    async def stacks(self) -> str:
        """A log entry with the worker's stacks now, on demand."""
        stacks = await read_stacks(self.worker)
        if stacks is not None:
            self._owner.count("stacks", "requested")
        return (
            f"{self._what()} for {self.elapsed():.1f}s; its stacks (most recent call first):\n"
            + indent(stacks or "(the worker did not answer)")
        )

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

    async def kill(self) -> str:
        """Stop the worker now: SIGTERM with a grace if it was late, else SIGKILL.

        A late worker's stacks are read first and, with ``timeout_grace``, the app is
        interrupted and given the grace to finish; what was learnt is returned for the
        log entry about the kill ("" if nothing).
        """
        with anyio.CancelScope(shield=True):
            note = await self._account() if self.timed_out else ""
            await self.worker.terminate(KILL_GRACE if self.timed_out else 0)
        return note

    async def _account(self) -> str:
        ran = self.elapsed()
        stacks = await read_stacks(self.worker)
        if stacks is not None:
            self._owner.count("stacks", "timeout")
        note = f"; it ran {ran:.1f}s"
        raised = ""
        if self.grace is not None:
            stopped, raised = await self._interrupt(self.grace)
            self._owner.count("interrupts", "stopped" if stopped else "killed")
            outcome = "the app stopped" if stopped else "the app did not stop"
            note += f"; interrupted with RequestTimeout, {outcome} within {self.grace:g}s"
        if stacks is not None:
            note += "\nits stacks at the deadline (most recent call first):\n" + indent(stacks)
        if raised:
            note += "\nthen " + raised.rstrip()
        return note

    async def _interrupt(self, grace: float) -> tuple[bool, str]:
        """Raise RequestTimeout in the app: whether the request ended within ``grace``,
        and the app's exception if it let it out (its response is dropped: the client is
        answered 504 all the same)."""
        if not self.worker.signal(INTERRUPT_SIGNAL):
            return False, ""
        deadline = time.monotonic() + grace
        try:
            while (left := deadline - time.monotonic()) > 0:
                for frame in await self.worker.reader.read(left) or ():
                    if type(frame) is Error:
                        return True, frame.message
                    if type(frame) is End:
                        return True, ""
        except WorkerError:
            pass  # it died or broke the channel: the kill follows all the same
        return False, ""

    def discard(self, reason: str) -> None:
        """The worker is broken or late: it is killed (if still running) and replaced."""
        if not self.ended:
            self.ended = True
            self._owner.discard(self.worker, reason)
