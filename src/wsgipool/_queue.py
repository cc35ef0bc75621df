"""The FIFO of requests waiting for a free worker.

A waiting request does not get a task of its own: it waits in its own task, inside a
cancel scope that also runs its *watch* (for the front: "until the client disconnects").
Handing it a worker, waking it, or its queue deadline all end that scope. The pool
decides policy (backlog, timeouts, what an empty wake means); this only queues.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

from ._loop import call_soon

if TYPE_CHECKING:
    from ._process import WorkerProcess

#: What a queued request runs while it waits; when it returns, the request leaves the queue.
Watch = Callable[[], Awaitable[None]]


class Waiter:
    """One queued request and how its wait ended."""

    __slots__ = ("error", "left", "scope", "woken", "worker")

    def __init__(self) -> None:
        self.scope: anyio.CancelScope | None = None
        self.worker: WorkerProcess | None = None  # handed over (None: woken to retry)
        self.error: Exception | None = None  # start-up failed and no worker is left
        self.woken = False
        self.left = False  # its watch returned: the request no longer wants a worker

    def wake(self) -> None:
        self.woken = True
        if self.scope is not None:
            call_soon(self.scope.cancel)  # see _loop.call_soon: cheaper than from here


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
            with anyio.CancelScope() as waiter.scope:
                if delay is not None:
                    waiter.scope.deadline = anyio.current_time() + delay
                if watch is None:
                    await anyio.sleep_forever()
                else:
                    await watch()
                    waiter.left = True
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
