"""The pool's worker state machine and dispatch, with fake workers and no processes.

A real :class:`~wsgipool._pool.pool.Pool` and its real :class:`WaitQueue`, with its
launcher's ``create`` replaced so that a "worker" is a :class:`FakeWorker`: an object with
the process facts and the stop calls the pool uses (``pid``, ``id``, ``alive()``,
``popen.poll()``, ``signal_group``, ``close_pipes``, ``stop``...), which records what was
done to it. The worker ids, the restart counts, the idle list, the hand-off to queued
requests and the leases are the pool's own.
"""

from __future__ import annotations

import itertools
import signal
import time
import types
from typing import Any

import anyio
import pytest

from wsgipool._config import Config
from wsgipool._errors import OverloadedError, PoolClosedError
from wsgipool._pool.deaths import Death, describe_exit
from wsgipool._pool.launch import Launcher
from wsgipool._pool.lease import Lease
from wsgipool._pool.pool import RETIRE_GRACE, Pool
from wsgipool._pool.slot import State

pytestmark = pytest.mark.anyio

_pids = itertools.count(4_000_000)  # above any real pid_max: never a real process


class FakeWorker:
    """What the pool touches of a ``WorkerProcess``; records signals and closed pipes."""

    def __init__(self, worker_id: int) -> None:
        self.id = worker_id
        self.pid = next(_pids)
        self.started_at = time.monotonic()
        self.template = None
        self.reader = types.SimpleNamespace(broken=False)
        self.popen = self  # ``popen.poll()``
        self.code: int | None = None  # exit status once it exited
        self.signals: list[int] = []
        self.pipes_closed = 0
        self.stopped = False

    def __repr__(self) -> str:
        return f"<fake worker {self.id}>"

    async def ready(self, timeout: float) -> None:
        await anyio.sleep(0)

    def poll(self) -> int | None:
        return self.code

    def alive(self) -> bool:
        return self.code is None

    def exit_status(self) -> str:
        return describe_exit(self.code)

    def death(self) -> Death | None:
        return None if self.code is None else Death(self.code, None, None, sent_sigkill=False)

    def signal_group(self, sig: int) -> None:
        self.signals.append(sig)

    def close_pipes(self) -> None:
        self.pipes_closed += 1
        self.reader.broken = True

    def die(self) -> None:
        """Killed from outside: its pipe ends and it has an exit status."""
        self.code = -signal.SIGKILL
        self.reader.broken = True

    async def stop(self, grace: float) -> int | None:
        self.close_pipes()
        self.stopped = True
        self.code = 0
        return 0

    def kill_now(self) -> None:
        self.signal_group(signal.SIGKILL)


class FakeLauncher(Launcher):
    """The real launcher (ids, limits, back-off) whose processes are fakes."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.created: list[FakeWorker] = []

    async def create(self) -> Any:
        worker = FakeWorker(self._take_id())
        self.processes.add(worker)  # type: ignore[arg-type]
        self.created.append(worker)
        return worker


def make_pool(**options: Any) -> tuple[Pool, FakeLauncher]:
    config = Config.from_options({"workers": 2, **options})
    pool = Pool({"kind": "import", "ref": "app:app"}, config)
    pool.launcher = launcher = FakeLauncher(pool.spec, config, pool._processes)
    return pool, launcher


def state(pool: Pool, worker: Any) -> State | None:
    slot = pool.workers.get(worker)
    return None if slot is None else slot.state


def counts(pool: Pool) -> tuple[int, int]:
    """(idle, busy) as the pool reports them (retiring counts as busy)."""
    stats = pool.stats()
    return len(stats.idle), len(stats.busy)


async def until_queued(pool: Pool, count: int = 1) -> None:
    with anyio.fail_after(5):
        while pool.waiting < count:
            await anyio.sleep(0)


# -- start-up and dispatch --------------------------------------------------------------


async def test_start_brings_the_workers_up_idle() -> None:
    pool, launcher = make_pool(workers=3)
    await pool.start()
    assert sorted(w.id for w in launcher.created) == [1, 2, 3]
    assert all(state(pool, w) is State.IDLE for w in launcher.created)
    assert (pool.size, pool.up) == (3, 3)
    assert counts(pool) == (3, 0)


async def test_acquire_leases_an_idle_worker_at_once() -> None:
    pool, launcher = make_pool(workers=2, timeout=7.0)
    await pool.start()
    lease = await pool.acquire()
    assert isinstance(lease, Lease)
    assert lease.worker in launcher.created
    assert lease.timeout == 7.0
    assert state(pool, lease.worker) is State.BUSY
    assert counts(pool) == (1, 1)
    assert pool.size == 2  # a busy worker still counts against ``workers``
    assert len(launcher.created) == 2  # nothing new was started
    lease.release()
    assert state(pool, lease.worker) is State.IDLE
    assert counts(pool) == (2, 0)


async def test_the_most_recently_used_worker_goes_first() -> None:
    pool, _ = make_pool(workers=2)
    await pool.start()
    first, second = await pool.acquire(), await pool.acquire()
    assert first is not None
    assert second is not None
    assert first.worker is not second.worker
    second.release()
    first.release()
    again = await pool.acquire()
    assert again is not None
    assert again.worker is first.worker


async def test_served_requests_are_counted_given_back_ones_are_not() -> None:
    pool, _ = make_pool(workers=1)
    await pool.start()
    lease = await pool.acquire()
    assert lease is not None
    worker = lease.worker
    lease.release(served=False)
    assert pool.workers[worker].requests == 0
    for _ in range(3):
        lease = await pool.acquire()
        assert lease is not None
        assert lease.worker is worker
        lease.release()
    assert pool.workers[worker].requests == 3
    assert pool.stats().workers[0].requests == 3


async def test_a_busy_worker_grows_the_pool_up_to_max_workers() -> None:
    pool, launcher = make_pool(workers=1, max_workers=2, queue_timeout=0.01)
    await pool.start()
    one, two = await pool.acquire(), await pool.acquire()
    assert one is not None
    assert two is not None
    assert len(launcher.created) == 2
    assert counts(pool) == (0, 2)
    with pytest.raises(OverloadedError):
        await pool.acquire()  # at the limit: queued, and nobody frees a worker in time
    assert len(launcher.created) == 2


# -- the queue ------------------------------------------------------------------------------


async def test_acquire_queues_when_none_is_idle_and_a_release_hands_the_worker_over() -> None:
    pool, launcher = make_pool(workers=1)
    await pool.start()
    first = await pool.acquire()
    assert first is not None
    worker = first.worker
    got: list[Lease | None] = []

    async def request() -> None:
        got.append(await pool.acquire())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(request)
            await until_queued(pool)
            assert got == []
            first.release()
            # Handed straight to the waiting request: never idle, so nobody else takes it.
            assert state(pool, worker) is State.BUSY
            assert counts(pool) == (0, 1)
    assert len(got) == 1
    assert got[0] is not None
    assert got[0].worker is worker
    assert pool.waiting == 0
    assert pool.workers[worker].requests == 1
    assert len(launcher.created) == 1


async def test_a_worker_handed_to_a_queued_request_is_checked_out_as_usual() -> None:
    pool, _ = make_pool(workers=1, max_requests=2)
    await pool.start()
    first = await pool.acquire()
    assert first is not None
    worker = first.worker
    got: list[Lease | None] = []

    async def request() -> None:
        got.append(await pool.acquire())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(request)
            await until_queued(pool)
            first.release()
    assert got[0] is not None
    assert got[0].worker is worker
    # Its second request is its last: the hand-off marked it as a checkout would.
    assert state(pool, worker) is State.RETIRING
    assert pool.workers[worker].reason == "max_requests"
    got[0].release()
    assert pool.restarts == {"max_requests": 1}


async def test_a_full_backlog_is_refused_at_once() -> None:
    pool, _ = make_pool(workers=1, backlog=0)
    await pool.start()
    lease = await pool.acquire()
    assert lease is not None
    with pytest.raises(OverloadedError, match="already waiting"):
        await pool.acquire()
    assert pool.waiting == 0


async def test_a_request_that_leaves_the_queue_gets_nothing() -> None:
    pool, _ = make_pool(workers=1)
    await pool.start()
    lease = await pool.acquire()
    assert lease is not None
    left = anyio.Event()

    async def watch() -> None:
        await left.wait()

    got: list[Lease | None] = []

    async def request() -> None:
        got.append(await pool.acquire(watch))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(request)
            await until_queued(pool)
            left.set()
    assert got == [None]
    assert pool.waiting == 0
    lease.release()
    assert counts(pool) == (1, 0)  # not handed to the request that left


async def test_a_worker_retiring_lets_a_queued_request_start_its_replacement() -> None:
    pool, _ = make_pool(workers=1)
    await pool.start()
    old = await pool.acquire()
    assert old is not None
    got: list[Lease | None] = []

    async def request() -> None:
        got.append(await pool.acquire())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(request)
            await until_queued(pool)
            pool.retire_after(old.worker, "reload")
            assert state(pool, old.worker) is State.RETIRING
    assert len(got) == 1
    assert got[0] is not None
    new = got[0].worker
    assert new is not old.worker
    assert new.id == 2  # id 1 is still in use until the old one exits
    assert counts(pool) == (0, 2)
    old.release()  # its last request is done: now it goes
    assert state(pool, old.worker) is State.EXITING
    assert pool.restarts == {"reload": 1}


async def test_shutdown_wakes_queued_requests_with_an_error() -> None:
    pool, launcher = make_pool(workers=1, graceful_timeout=5.0)
    await pool.start()
    lease = await pool.acquire()
    assert lease is not None
    errors: list[BaseException] = []

    async def request() -> None:
        try:
            await pool.acquire()
        except PoolClosedError as exc:
            errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(request)
            await until_queued(pool)
            tg.start_soon(pool.aclose)
            while not errors:
                await anyio.sleep(0)
            lease.release()  # during shutdown: the worker leaves instead of going idle
    assert len(errors) == 1
    assert launcher.created[0].stopped
    assert pool.workers == {}
    assert pool.restarts == {}  # stopping at shutdown is no restart
    with pytest.raises(PoolClosedError):
        await pool.acquire()


# -- endings and the state machine -------------------------------------------------------


async def test_a_discarded_worker_is_killed_counted_and_never_handed_out_again() -> None:
    pool, launcher = make_pool(workers=1)
    await pool.start()
    lease = await pool.acquire()
    assert lease is not None
    bad = lease.worker
    lease.discard("timeout")
    assert state(pool, bad) is State.EXITING
    assert bad.signals == [signal.SIGKILL]  # no grace: it was broken
    assert bad.pipes_closed == 1
    assert pool.restarts == {"timeout": 1}
    assert (pool.size, pool.up) == (0, 0)
    pool.release(bad)  # a late release changes nothing
    assert state(pool, bad) is State.EXITING
    seen = set()
    for _ in range(4):
        lease = await pool.acquire()
        assert lease is not None
        seen.add(lease.worker)
        lease.release()
    assert bad not in seen
    assert len(seen) == 1
    (new,) = seen
    assert new.id == bad.id  # the replacement takes the freed number
    assert len(launcher.created) == 2


async def test_restarts_are_counted_by_reason() -> None:
    pool, launcher = make_pool(workers=4)
    await pool.start()
    a, b, c, d = launcher.created
    pool.discard(a, "timeout")
    pool.discard(b, "timeout")
    pool.retire(c, "idle")
    pool._set_state(d, State.EXITING)  # no reason (a shutdown): not a restart
    assert pool.restarts == {"timeout": 2, "idle": 1}
    assert pool.stats().restarts == {"timeout": 2, "idle": 1}
    assert [state(pool, w) for w in (a, b, c, d)] == [State.EXITING] * 4
    assert counts(pool) == (0, 0)


async def test_a_retired_worker_gets_a_grace_before_the_kill() -> None:
    pool, launcher = make_pool(workers=1)
    await pool.start()
    (worker,) = launcher.created
    before = time.monotonic()
    pool.retire(worker, "idle")
    assert worker.pipes_closed == 1  # it exits at EOF
    assert worker.signals == []
    slot = pool.workers[worker]
    assert before + RETIRE_GRACE <= slot.kill_at <= time.monotonic() + RETIRE_GRACE
    pool.reap()  # still running, within its grace: left alone
    assert worker.signals == []
    slot.kill_at = time.monotonic() - 1  # the grace is over
    pool.reap()
    assert worker.signals == [signal.SIGKILL]
    assert state(pool, worker) is State.EXITING


async def test_max_requests_retires_a_worker_after_its_last_request() -> None:
    pool, launcher = make_pool(workers=1, max_requests=2)
    await pool.start()
    (worker,) = launcher.created
    first = await pool.acquire()
    assert first is not None
    assert first.worker is worker
    first.release()
    assert state(pool, worker) is State.IDLE
    last = await pool.acquire()
    assert last is not None
    assert last.worker is worker
    # Marked at checkout, so that its replacement may start while the last request runs.
    assert state(pool, worker) is State.RETIRING
    assert pool.stats().workers[0].state == "retiring"
    assert pool.size == 0
    last.release()
    assert state(pool, worker) is State.EXITING
    assert pool.restarts == {"max_requests": 1}
    assert worker.signals == []  # it is let go, not killed
    after = await pool.acquire()
    assert after is not None
    assert after.worker is not worker
    assert len(launcher.created) == 2


async def test_there_is_no_way_back_from_exiting() -> None:
    pool, launcher = make_pool(workers=1)
    await pool.start()
    (worker,) = launcher.created
    pool.discard(worker, "broken")
    for back in (State.IDLE, State.BUSY, State.RETIRING):
        pool._set_state(worker, back)
        assert state(pool, worker) is State.EXITING
    pool.discard(worker, "broken again")  # not counted twice
    assert pool.restarts == {"broken": 1}
    assert counts(pool) == (0, 0)
    assert pool.size == 0


async def test_an_exited_worker_is_reaped_and_forgotten() -> None:
    pool, launcher = make_pool(workers=1)
    await pool.start()
    (worker,) = launcher.created
    pool.discard(worker, "broken")
    pool.reap()
    assert state(pool, worker) is State.EXITING  # not exited yet
    worker.code = -signal.SIGKILL
    pool.reap()
    assert worker not in pool.workers
    assert worker not in pool._processes


async def test_the_counts_follow_a_worker_through_its_life() -> None:
    pool, _ = make_pool(workers=2)
    await pool.start()
    lease = await pool.acquire()
    assert lease is not None
    worker = lease.worker
    assert (counts(pool), pool.size, pool.up) == ((1, 1), 2, 2)
    pool.retire_after(worker, "reload")
    assert (counts(pool), pool.size, pool.up) == ((1, 1), 1, 2)  # retiring: not in size
    lease.release()
    assert (counts(pool), pool.size, pool.up) == ((1, 0), 1, 1)
    worker.code = 0
    pool.reap()
    assert (counts(pool), pool.size, pool.up) == ((1, 0), 1, 1)
    assert pool.tick() == 1  # one to start, to get back to ``workers``


async def test_a_worker_that_died_while_idle_is_not_handed_out() -> None:
    pool, launcher = make_pool(workers=2)
    await pool.start()
    dead = pool._idle[-1]  # the one acquire would pick
    dead.die()
    lease = await pool.acquire()
    assert lease is not None
    assert lease.worker is not dead
    assert lease.worker in launcher.created[:2]
    assert state(pool, dead) is State.EXITING
    assert pool.restarts == {"died": 1}
    assert len(launcher.created) == 2  # the other idle worker sufficed


async def test_tick_notices_an_idle_worker_that_died() -> None:
    pool, launcher = make_pool(workers=2)
    await pool.start()
    dead = launcher.created[0]
    dead.code = 1  # exited; its pipe not yet seen to end
    assert pool.tick() == 1
    assert pool.restarts == {"died": 1}
    assert state(pool, dead) is State.EXITING
    assert pool.tick() == 1  # the next tick reaps it: it has exited
    assert dead not in pool.workers
    assert pool.restarts == {"died": 1}
