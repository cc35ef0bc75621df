"""The wait queue on its own, on asyncio and trio: FIFO hand-off, newest first once backed
up, waking, deadlines, and a worker handed to a request whose task is cancelled at the same
moment.

The queue treats a worker as an opaque token, so the workers here are plain strings; the
pool's use of it (real processes) is tested through a server in test_supervision.
"""

from __future__ import annotations

import select
import time
from typing import Any

import anyio
import pytest

from wsgipool._pool.queue import CONGESTED, STARVING, Waiter, WaitQueue

pytestmark = pytest.mark.anyio


class Pool:
    """What the pool gives the queue: a checkout hook and a give-back that re-offers."""

    def __init__(self, queue: WaitQueue) -> None:
        self.queue = queue
        self.checked_out: list[Any] = []
        self.given_back: list[Any] = []
        self.idle: list[Any] = []

    def checkout(self, worker: Any) -> None:
        self.checked_out.append(worker)

    def unused(self, worker: Any, sent: bool = False) -> None:
        self.given_back.append((worker, "with the request") if sent else worker)
        if not self.queue.hand(worker, self.checkout):
            self.idle.append(worker)

    async def wait(
        self, delay: float | None = None, watch: Any = None, payload: Any = ()
    ) -> Waiter:
        return await self.queue.wait(delay, watch, self.unused, None, payload)


class Worker:
    """A worker's pipe as ``hand`` sees it: ``try_write`` of whole frames, or refused."""

    def __init__(self, accepts: bool = True) -> None:
        self.accepts = accepts
        self.written: list[bytes] = []

    def try_write(self, *pieces: bytes) -> bool:
        if self.accepts:
            self.written.append(b"".join(pieces))
        return self.accepts


async def queued(queue: WaitQueue, count: int) -> None:
    """Until ``count`` requests are in the queue (each is queued at its first step)."""
    with anyio.fail_after(5):
        while len(queue) < count:
            await anyio.sleep(0)


async def test_workers_go_to_the_longest_waiting_first() -> None:
    queue = WaitQueue()
    pool = Pool(queue)
    got: dict[int, Waiter] = {}

    async def request(n: int) -> None:
        got[n] = await pool.wait()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(request, n)
                await queued(queue, n + 1)
            for worker in ("w0", "w1", "w2"):
                assert queue.hand(worker, pool.checkout)
    assert {n: w.worker for n, w in got.items()} == {0: "w0", 1: "w1", 2: "w2"}
    assert all(w.woken and w.error is None and not w.left for w in got.values())
    assert pool.checked_out == ["w0", "w1", "w2"]
    assert len(queue) == 0
    assert not queue.hand("w3", pool.checkout)  # nobody waits: the caller keeps it


async def test_a_backed_up_queue_serves_the_newest_first() -> None:
    """Once the oldest has waited past CONGESTED, each worker goes to the newest request;
    when the backlog is short again, the order is first come, first served again."""
    queue = WaitQueue()
    pool = Pool(queue)
    got: dict[int, Waiter] = {}

    async def request(n: int) -> None:
        got[n] = await pool.wait()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(request, n)
                await queued(queue, n + 1)
            await anyio.sleep(CONGESTED * 2)
            tg.start_soon(request, 3)
            await queued(queue, 4)
            assert queue.backed_up()
            for worker in ("w0", "w1", "w2"):
                assert queue.hand(worker, pool.checkout)
            while len(got) < 3:
                await anyio.sleep(0)
            tg.start_soon(request, 4)  # the oldest still waits: backed up
            await queued(queue, 2)
            assert queue.hand("w3", pool.checkout)
            while 4 not in got:
                await anyio.sleep(0)
            assert queue.hand("w4", pool.checkout)
            tg.start_soon(request, 5)  # nobody old waits any more: first come again
            await queued(queue, 1)
            tg.start_soon(request, 6)
            await queued(queue, 2)
            assert not queue.backed_up()
            assert queue.hand("w5", pool.checkout)
            assert queue.hand("w6", pool.checkout)
    expected = {3: "w0", 2: "w1", 1: "w2", 4: "w3", 0: "w4", 5: "w5", 6: "w6"}
    assert {n: w.worker for n, w in got.items()} == expected


async def test_a_request_waiting_past_starving_is_served_first_again() -> None:
    """However backed up the queue, the oldest is not starved: once it has waited
    STARVING seconds (counted from when it first queued) it goes first."""
    queue = WaitQueue()
    pool = Pool(queue)
    got: dict[str, Waiter] = {}

    async def request(name: str, since: float | None = None) -> None:
        got[name] = await queue.wait(None, None, pool.unused, since)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(request, "starving", time.monotonic() - STARVING - 1)
            await queued(queue, 1)
            tg.start_soon(request, "backed up", time.monotonic() - CONGESTED - 1)
            await queued(queue, 2)
            tg.start_soon(request, "new")
            await queued(queue, 3)
            assert queue.hand("w0", pool.checkout)
            while not got:
                await anyio.sleep(0)
            assert list(got) == ["starving"]
            queue.hand("w1", pool.checkout)  # the oldest now is only backed up: newest
            queue.hand("w2", pool.checkout)
    assert {n: w.worker for n, w in got.items()} == {
        "starving": "w0",
        "new": "w1",
        "backed up": "w2",
    }


@pytest.mark.parametrize("order", ["hand-then-cancel", "cancel-then-hand"])
async def test_worker_handed_to_a_cancelled_request_is_given_back(order: str) -> None:
    queue = WaitQueue()
    pool = Pool(queue)
    kept: list[Any] = []
    cancelled: list[bool] = []

    async def request(scope: anyio.CancelScope) -> None:
        with scope:
            try:
                waiter = await pool.wait()
            except anyio.get_cancelled_exc_class():
                cancelled.append(True)
                raise
            kept.append(waiter.worker)

    scope = anyio.CancelScope()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(request, scope)
            await queued(queue, 1)
            if order == "hand-then-cancel":
                queue.hand("w", pool.checkout)
                scope.cancel()
            else:
                scope.cancel()
                queue.hand("w", pool.checkout)
    # The cancellation wins, and the worker is the pool's again, not lost with the task.
    assert (cancelled, kept) == ([True], [])
    assert pool.given_back == pool.idle == ["w"]
    assert len(queue) == 0


async def test_given_back_worker_goes_to_the_next_waiter() -> None:
    queue = WaitQueue()
    pool = Pool(queue)
    second: list[Waiter] = []

    async def first(scope: anyio.CancelScope) -> None:
        with scope:
            await pool.wait()

    async def next_one() -> None:
        second.append(await pool.wait())

    scope = anyio.CancelScope()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first, scope)
            await queued(queue, 1)
            tg.start_soon(next_one)
            await queued(queue, 2)
            scope.cancel()  # the first leaves in the same step it is handed a worker
            queue.hand("w", pool.checkout)
    assert pool.given_back == ["w"]
    assert [w.worker for w in second] == ["w"]
    assert pool.checked_out == ["w", "w"]
    assert pool.idle == []


async def test_wake_all_with_an_error_reaches_every_waiter() -> None:
    queue = WaitQueue()
    pool = Pool(queue)
    woken: list[Waiter] = []
    error = RuntimeError("the app does not load")

    async def request() -> None:
        woken.append(await pool.wait())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(request)
            await queued(queue, 3)
            queue.wake_all(error)
            assert len(queue) == 0  # nobody is left to hand a worker to
    assert len(woken) == 3
    assert all(w.error is error and w.worker is None and w.woken for w in woken)


async def test_wake_one_lets_only_the_longest_waiting_retry() -> None:
    queue = WaitQueue()
    pool = Pool(queue)
    done: list[tuple[int, Waiter]] = []

    async def request(n: int) -> None:
        done.append((n, await pool.wait()))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for n in range(2):
                tg.start_soon(request, n)
                await queued(queue, n + 1)
            queue.wake_one()
            while not done:
                await anyio.sleep(0)
            assert len(queue) == 1
            queue.hand("w", pool.checkout)
    first, second = done
    assert (first[0], first[1].woken, first[1].worker, first[1].error) == (0, True, None, None)
    assert (second[0], second[1].worker) == (1, "w")


async def test_queue_deadline_ends_the_wait_unwoken() -> None:
    queue = WaitQueue()
    pool = Pool(queue)
    with anyio.fail_after(5):
        waiter = await pool.wait(delay=0.05)
    assert (waiter.woken, waiter.worker, waiter.error, waiter.left) == (False, None, None, False)
    assert len(queue) == 0
    assert not queue.hand("w", pool.checkout)


async def test_a_watch_that_returns_leaves_the_queue() -> None:
    queue = WaitQueue()
    pool = Pool(queue)
    client_gone = anyio.Event()
    results: list[Waiter] = []

    async def request() -> None:
        results.append(await pool.wait(watch=client_gone.wait))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(request)
            await queued(queue, 1)
            client_gone.set()
    (waiter,) = results
    assert (waiter.left, waiter.woken, waiter.worker) == (True, False, None)
    assert len(queue) == 0


async def test_a_hand_off_ends_the_watch() -> None:
    queue = WaitQueue()
    pool = Pool(queue)
    watching = anyio.Event()
    watch_ended: list[bool] = []
    results: list[Waiter] = []

    async def watch() -> None:
        watching.set()
        try:
            await anyio.sleep_forever()
        finally:
            watch_ended.append(True)

    async def request() -> None:
        results.append(await pool.wait(watch=watch))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(request)
            await watching.wait()
            queue.hand("w", pool.checkout)
    assert watch_ended == [True]
    assert [(w.worker, w.left) for w in results] == [("w", False)]


@pytest.mark.parametrize("order", ["hand-then-leave", "leave-then-hand"])
async def test_worker_handed_as_the_client_leaves_stays_with_the_waiter(order: str) -> None:
    # The watch may return before the hand-off's cancel lands: the worker must still be
    # on the waiter, for the pool to give back (``left``) or use.
    queue = WaitQueue()
    pool = Pool(queue)
    client_gone = anyio.Event()
    results: list[Waiter] = []

    async def request() -> None:
        results.append(await pool.wait(watch=client_gone.wait))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(request)
            await queued(queue, 1)
            if order == "hand-then-leave":
                queue.hand("w", pool.checkout)
                client_gone.set()
            else:
                client_gone.set()
                queue.hand("w", pool.checkout)
    (waiter,) = results
    assert waiter.worker == "w"
    assert pool.given_back == []  # wait() returned: the caller decides, by ``left``
    assert len(queue) == 0


async def test_a_queued_request_reaches_its_worker_with_the_hand_over() -> None:
    """The request's first frames are in the worker's pipe when ``hand`` returns (before
    the request's task runs again), if they fit one atomic pipe write and the pipe takes
    them; else the request writes them itself."""
    queue = WaitQueue()
    pool = Pool(queue)
    got: dict[str, Waiter] = {}
    small = [b"REQUEST", b"EOF"]
    large = [b"R" * select.PIPE_BUF, b"EOF"]

    async def request(name: str, payload: Any) -> None:
        got[name] = await pool.wait(payload=payload)

    workers = {"small": Worker(), "large": Worker(), "gone": Worker(accepts=False)}
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for n, (name, payload) in enumerate(
                [("small", small), ("large", large), ("gone", small)]
            ):
                tg.start_soon(request, name, payload)
                await queued(queue, n + 1)
            assert queue.hand(workers["small"], pool.checkout)
            assert workers["small"].written == [b"REQUESTEOF"]  # already, synchronously
            assert queue.hand(workers["large"], pool.checkout)
            assert queue.hand(workers["gone"], pool.checkout)
    assert {name: w.sent for name, w in got.items()} == {
        "small": True,
        "large": False,
        "gone": False,
    }
    assert workers["large"].written == []


async def test_a_worker_that_has_a_cancelled_requests_frames_is_not_reused() -> None:
    """Handed over with the request's frames and then cancelled: the pool is told, so it
    replaces the worker instead of giving the next request a pipe with an answer coming."""
    queue = WaitQueue()
    pool = Pool(queue)
    worker = Worker()
    scope = anyio.CancelScope()

    async def request() -> None:
        with scope:
            await pool.wait(payload=[b"REQUEST"])

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(request)
            await queued(queue, 1)
            queue.hand(worker, pool.checkout)
            scope.cancel()
    assert worker.written == [b"REQUEST"]
    assert pool.given_back == [(worker, "with the request")]
