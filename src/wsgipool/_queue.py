"""The FIFO of requests waiting for a free worker.

A waiting request does not get a task of its own: it waits in its own task, running its
*watch* (for the front: "until the client disconnects") under
:func:`wsgipool._loop.wait_until_woken`. Handing it a worker, waking it, or its queue
deadline all end that wait. The pool
decides policy (backlog, timeouts, what an empty wake means); this only queues.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

from ._loop import Wake, wait_until_woken

if TYPE_CHECKING:
    from ._process import WorkerProcess

#: What a queued request runs while it waits; when it returns, the request leaves the queue.
Watch = Callable[[], Awaitable[None]]


class Waiter:
    """One queued request and how its wait ended."""

    __slots__ = ("_wake", "error", "left", "woken", "worker")

    def __init__(self) -> None:
        self._wake: Wake | None = None
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
    """Requests waiting for a worker, longest-waiting first."""

    def __init__(self) -> None:
        self._waiters: deque[Waiter] = deque()

    def __len__(self) -> int:
        return len(self._waiters)

    async def wait(
        self,
        delay: float | None,
        watch: Watch | None,
        give_back: Callable[[WorkerProcess], None],
    ) -> Waiter:
        """Queue and wait; the returned waiter says how the wait ended.

        ``give_back`` takes a worker handed over just as the waiting task was cancelled.
        """
        waiter = Waiter()
        self._waiters.append(waiter)
        try:
            waiter.left = await wait_until_woken(watch or anyio.sleep_forever, delay,
                                                 waiter._set_wake)  # fmt: skip
        except BaseException:
            if waiter.worker is not None:
                give_back(waiter.worker)
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return waiter

    def hand(self, worker: WorkerProcess, checkout: Callable[[WorkerProcess], None]) -> bool:
        """Give ``worker`` to the longest-waiting request, if there is one."""
        if not self._waiters:
            return False
        waiter = self._waiters.popleft()
        waiter.worker = worker
        checkout(worker)
        waiter.wake()
        return True

    def wake_one(self) -> None:
        """Let the longest-waiting request retry (capacity changed)."""
        if self._waiters:
            self._waiters.popleft().wake()

    def wake_all(self, error: Exception | None = None) -> None:
        """Wake every waiting request, with ``error`` to raise if given."""
        while self._waiters:
            waiter = self._waiters.popleft()
            waiter.error = error
            waiter.wake()
