"""The queue of requests waiting for a free worker: first come, first served, until it backs up.

While the queue drains quickly, workers go to the longest-waiting request. Once the oldest
has waited more than :data:`CONGESTED` seconds, the queue is backed up (a burst of slow
requests, a flood) and workers go to the *newest* request instead, until it drains: under
overload a FIFO makes every request wait as long as the whole backlog, while newest-first
keeps the wait of most requests short and lets the oldest, whose clients have likely given
up, run into ``queue_timeout``. (Adaptive LIFO, as large RPC systems use it to stay
responsive under load.) A request that has waited :data:`STARVING` seconds is served
before newer ones all the same, so a long, moderate backlog cannot starve it, even with
no ``queue_timeout``.

A waiting request does not get a task of its own: it waits in its own task, running its
*watch* (for the front: "until the client disconnects") under
:func:`wsgipool._pool.readers.wait_until_woken`. Handing it a worker, waking it, or its queue
deadline all end that wait. The pool
decides policy (backlog, timeouts, what an empty wake means); this only queues.
"""

from __future__ import annotations

import select
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import anyio

from .readers import Wake, wait_until_woken

if TYPE_CHECKING:
    from .process import WorkerProcess

#: Seconds the oldest request may wait before the queue serves the newest first.
CONGESTED = 0.5
#: Seconds after which the oldest request is served first again, backed up or not.
STARVING = 10.0

#: What a queued request runs while it waits; when it returns, the request leaves the queue.
Watch = Callable[[], Awaitable[None]]
#: A queued request's first frames, written into the worker's pipe as it is handed over
#: when they fit one atomic pipe write (the common GET); empty: the request writes them.
Payload = Sequence[bytes | bytearray | memoryview]


class Waiter:
    """One queued request and how its wait ended."""

    __slots__ = ("_wake", "error", "left", "payload", "sent", "since", "woken", "worker")

    def __init__(self, since: float | None = None, payload: Payload = ()) -> None:
        self._wake: Wake | None = None
        self.payload = payload  # the request's first frames, if small enough to go ahead
        self.sent = False  # ... and they went to the worker with the hand-over
        self.since = time.monotonic() if since is None else since
        self.worker: WorkerProcess | None = None  # handed over (None: woken to retry)
        self.error: Exception | None = None  # start-up failed and no worker is left
        self.woken = False
        self.left = False  # its watch returned: the request no longer wants a worker

    def wake(self) -> None:
        self.woken = True
        if self._wake is not None:
            self._wake()

    def _set_wake(self, wake: Wake) -> None:
        self._wake = wake


class WaitQueue:
    """Requests waiting for a worker: longest-waiting first, newest first when backed up."""

    def __init__(self) -> None:
        self._waiters: deque[Waiter] = deque()

    def __len__(self) -> int:
        return len(self._waiters)

    async def wait(
        self,
        delay: float | None,
        watch: Watch | None,
        unused: Callable[[WorkerProcess, bool], None],
        since: float | None = None,
        payload: Payload = (),
    ) -> Waiter:
        """Queue and wait; the returned waiter says how the wait ended.

        ``unused`` takes back a worker handed over just as the waiting task was cancelled
        (and whether the request's frames went to it); ``since`` is when the request first
        queued, if it is queueing again; ``payload``: see :data:`Payload`.
        """
        small = sum(map(len, payload)) <= select.PIPE_BUF
        waiter = Waiter(since, payload if small else ())
        self._waiters.append(waiter)
        try:
            waiter.left = await wait_until_woken(watch or anyio.sleep_forever, delay,
                                                 waiter._set_wake)  # fmt: skip
        except BaseException:
            if waiter.worker is not None:
                unused(waiter.worker, waiter.sent)
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return waiter

    def backed_up(self) -> bool:
        """Does the newest request go first now? The oldest has waited longer than
        :data:`CONGESTED`, but not yet :data:`STARVING`."""
        waiters = self._waiters
        return bool(waiters) and CONGESTED < time.monotonic() - waiters[0].since < STARVING

    def hand(self, worker: WorkerProcess, checkout: Callable[[WorkerProcess], None]) -> bool:
        """Give ``worker`` to the next request (see the module's docstring), if any."""
        if not self._waiters:
            return False
        waiter = self._next()
        waiter.worker = worker
        checkout(worker)
        # The worker starts on the request now, not once the request's task has run: on a
        # busy front that is several loop turns (and other requests' sends) later.
        if waiter.payload:
            waiter.sent = worker.try_write(*waiter.payload)
        waiter.wake()
        return True

    def wake_one(self) -> None:
        """Let the next request retry (capacity changed)."""
        if self._waiters:
            self._next().wake()

    def _next(self) -> Waiter:
        return self._waiters.pop() if self.backed_up() else self._waiters.popleft()

    def wake_all(self, error: Exception | None = None) -> None:
        """Wake every waiting request, with ``error`` to raise if given."""
        while self._waiters:
            waiter = self._waiters.popleft()
            waiter.error = error
            waiter.wake()
