"""The lease on its own: a fake worker channel and a fake owner, a clock the test moves.

The lease speaks to its worker through ``write``/``try_write``, ``reader.read(timeout)``,
``reader.interrupt()`` and ``terminate(grace)``, and to its pool through ``release`` and
``discard`` (:class:`~wsgipool._pool.lease.Owner`). Both are stood in for here, and the
lease's ``time.monotonic`` is a clock that moves only when a fake read "waits", so every
deadline is exact and no test sleeps.
"""

from __future__ import annotations

import types
from collections import deque
from typing import Any

import anyio
import pytest

from wsgipool._errors import LeaseEndedError, WorkerTimeoutError
from wsgipool._pool import lease as lease_module
from wsgipool._pool.lease import Lease
from wsgipool._pool.process import KILL_GRACE

pytestmark = pytest.mark.anyio


class Clock:
    """``time.monotonic`` for the lease: it moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeReader:
    """``read(timeout)``: queued frames at once; else, by default, the whole timeout
    passes on the clock and the answer is None. With ``stall``, a read waits (really)
    until :meth:`interrupt` or :meth:`push`."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.queued: deque[list[Any]] = deque()
        self.waits: list[float | None] = []  # the timeout of every read, in order
        self.interrupts = 0
        self.stall = False
        self._woken: anyio.Event | None = None

    def push(self, *frames: Any) -> None:
        self.queued.append(list(frames))
        if self._woken is not None:
            self._woken.set()

    async def read(self, timeout: float | None = None) -> list[Any] | None:
        self.waits.append(timeout)
        if not self.queued and self.stall:
            self._woken = anyio.Event()
            try:
                await self._woken.wait()
            finally:
                self._woken = None
            return self.queued.popleft() if self.queued else None  # else: interrupted
        if self.queued:
            return self.queued.popleft()
        assert timeout is not None, "a read with no timeout and nothing to read never ends"
        self.clock.advance(timeout)
        return None

    @property
    def reading(self) -> bool:
        return self._woken is not None

    def interrupt(self) -> None:
        self.interrupts += 1
        if self._woken is not None:
            self._woken.set()


class FakeWorker:
    """The worker channel a lease uses."""

    def __init__(self, clock: Clock) -> None:
        self.reader = FakeReader(clock)
        self.written: list[bytes] = []
        self.tried: list[bytes] = []
        self.room = True  # try_write succeeds
        self.terminated: list[float] = []  # grace of each terminate that ran to its end
        self.stacks = -1  # no stack pipe: a late worker's kill reads none

    async def write(self, *pieces: bytes | bytearray | memoryview) -> None:
        await anyio.sleep(0)
        self.written.append(b"".join(bytes(p) for p in pieces))

    def try_write(self, frame: bytes) -> bool:
        if self.room:
            self.tried.append(frame)
        return self.room

    async def terminate(self, grace: float = KILL_GRACE) -> int | None:
        await anyio.sleep(0)  # a checkpoint: cancelled here unless shielded
        self.terminated.append(grace)
        return -9


class FakeOwner:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []

    def release(self, worker: Any, served: bool) -> None:
        self.calls.append(("release", worker, served))

    def discard(self, worker: Any, reason: str) -> None:
        self.calls.append(("discard", worker, reason))

    def count(self, event: str, label: str) -> None:
        self.calls.append(("count", event, label))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(lease_module, "time", types.SimpleNamespace(monotonic=clock))
    return clock


@pytest.fixture
def worker(clock: Clock) -> FakeWorker:
    return FakeWorker(clock)


@pytest.fixture
def owner() -> FakeOwner:
    return FakeOwner()


def make(owner: FakeOwner, worker: FakeWorker, timeout: float | None = 10.0) -> Lease:
    return Lease(owner, worker, timeout)  # type: ignore[arg-type]


# -- the channel -------------------------------------------------------------------------


async def test_send_writes_whole_frames_through_the_worker(owner, worker) -> None:
    lease = make(owner, worker)
    await lease.send(b"ab", bytearray(b"cd"), memoryview(b"ef"))
    assert worker.written == [b"abcdef"]
    assert lease.try_send(b"small")
    assert worker.tried == [b"small"]
    worker.room = False
    assert not lease.try_send(b"more")


@pytest.mark.parametrize("ending", ["release", "release unused", "discard"])
async def test_send_is_refused_once_the_lease_ended(owner, worker, ending: str) -> None:
    lease = make(owner, worker)
    if ending == "discard":
        lease.discard("broken")
    else:
        lease.release(served=ending == "release")
    with pytest.raises(LeaseEndedError):
        lease.send(b"late")  # refused at once, not when awaited
    assert not lease.try_send(b"late")
    assert worker.written == []
    assert worker.tried == []  # the worker was not even asked


# -- the ending ----------------------------------------------------------------------------


async def test_release_tells_the_owner_once_that_the_request_was_served(owner, worker) -> None:
    lease = make(owner, worker)
    assert not lease.ended
    lease.release()
    lease.release()
    lease.release(served=False)
    lease.discard("too late")
    assert lease.ended
    assert owner.calls == [("release", worker, True)]


async def test_an_unused_release_tells_the_owner_once_nothing_was_served(owner, worker) -> None:
    lease = make(owner, worker)
    lease.release(served=False)
    lease.release(served=False)
    lease.release()
    lease.discard("too late")
    assert owner.calls == [("release", worker, False)]


async def test_discard_tells_the_owner_once_with_the_reason(owner, worker) -> None:
    lease = make(owner, worker)
    lease.discard("protocol error")
    lease.discard("again")
    lease.release()
    lease.release(served=False)
    assert owner.calls == [("discard", worker, "protocol error")]


# -- reading and the deadline ----------------------------------------------------------------


async def test_read_returns_the_frames_and_waits_no_longer_than_the_time_left(
    owner, worker, clock
) -> None:
    lease = make(owner, worker, timeout=10.0)
    clock.advance(4.0)
    worker.reader.push("frame 1", "frame 2")
    worker.reader.push("frame 3")
    assert await lease.read() == ["frame 1", "frame 2"]
    assert await lease.read(patience=1.5) == ["frame 3"]
    assert worker.reader.waits == [pytest.approx(6.0), 1.5]  # min(patience, time left)
    assert not lease.timed_out


async def test_read_with_no_deadline_waits_as_long_as_the_patience(owner, worker) -> None:
    lease = make(owner, worker, timeout=None)
    assert lease.deadline is None
    assert await lease.read(patience=3.0) is None
    assert worker.reader.waits == [3.0]
    assert not lease.timed_out


async def test_patience_running_out_before_the_deadline_is_none(owner, worker, clock) -> None:
    lease = make(owner, worker, timeout=10.0)
    assert await lease.read(patience=2.0) is None
    assert clock.now == pytest.approx(1002.0)
    assert not lease.timed_out
    assert owner.calls == []


async def test_read_past_the_deadline_raises_and_marks_the_lease_timed_out(
    owner, worker, clock
) -> None:
    lease = make(owner, worker, timeout=10.0)
    worker.reader.push("never read")
    clock.advance(10.0)
    with pytest.raises(WorkerTimeoutError, match=r"no response within 10\.0s"):
        await lease.read()
    assert lease.timed_out
    assert worker.reader.waits == []  # the reader was not asked
    assert owner.calls == []  # failing the lease is the caller's business


async def test_a_read_that_outlasts_the_deadline_raises(owner, worker, clock) -> None:
    lease = make(owner, worker, timeout=10.0)
    clock.advance(7.0)
    with pytest.raises(WorkerTimeoutError):
        await lease.read()  # waits the 3 s left, then finds the deadline passed
    assert worker.reader.waits == [pytest.approx(3.0)]
    assert lease.timed_out


async def test_patience_longer_than_the_time_left_raises_rather_than_none(
    owner, worker, clock
) -> None:
    lease = make(owner, worker, timeout=10.0)
    clock.advance(9.0)
    with pytest.raises(WorkerTimeoutError):
        await lease.read(patience=5.0)
    assert worker.reader.waits == [pytest.approx(1.0)]
    assert lease.timed_out


async def test_pause_stops_the_clock_and_resume_restarts_it(owner, worker, clock) -> None:
    lease = make(owner, worker, timeout=10.0)
    clock.advance(4.0)
    lease.pause()
    assert lease.deadline is None
    clock.advance(1000.0)  # the client took its time: not the app's
    assert await lease.read(patience=50.0) is None  # no deadline while paused
    assert not lease.timed_out
    lease.pause()  # twice: the time left is not measured again
    lease.resume()
    assert lease.deadline == pytest.approx(clock.now + 6.0)
    lease.resume()  # not paused: nothing changes
    assert lease.deadline == pytest.approx(clock.now + 6.0)
    clock.advance(6.0)
    with pytest.raises(WorkerTimeoutError):
        await lease.read()


async def test_pause_without_a_deadline_does_nothing(owner, worker, clock) -> None:
    lease = make(owner, worker, timeout=None)
    lease.pause()
    lease.resume()
    assert lease.deadline is None


# -- the client leaving ------------------------------------------------------------------


async def test_client_left_shortens_the_deadline_to_the_grace(owner, worker, clock) -> None:
    lease = make(owner, worker, timeout=10.0)
    lease.client_left(2.0)
    assert lease.client_gone
    assert lease.deadline == pytest.approx(clock.now + 2.0)
    assert worker.reader.interrupts == 1
    clock.advance(2.0)
    with pytest.raises(WorkerTimeoutError, match="did not stop after the client left"):
        await lease.read()


async def test_client_left_never_lengthens_the_deadline(owner, worker, clock) -> None:
    lease = make(owner, worker, timeout=10.0)
    clock.advance(9.0)
    deadline = lease.deadline
    lease.client_left(5.0)
    assert lease.deadline == deadline
    assert worker.reader.interrupts == 0  # nothing for a read to look at again
    assert lease.client_gone


async def test_client_left_gives_a_deadline_to_a_lease_without_one(owner, worker, clock) -> None:
    lease = make(owner, worker, timeout=None)
    lease.client_left(3.0)
    assert lease.deadline == pytest.approx(clock.now + 3.0)


async def test_client_left_while_paused_shortens_the_time_left(owner, worker, clock) -> None:
    lease = make(owner, worker, timeout=10.0)
    lease.pause()
    lease.client_left(2.0)
    assert lease.deadline is None  # still paused
    assert worker.reader.interrupts == 0
    clock.advance(100.0)
    lease.resume()
    assert lease.deadline == pytest.approx(clock.now + 2.0)


async def test_client_left_interrupts_a_read_in_progress(owner, worker, clock) -> None:
    lease = make(owner, worker, timeout=30.0)
    worker.reader.stall = True
    outcome: list[BaseException] = []

    async def read() -> None:
        try:
            await lease.read()
        except WorkerTimeoutError as exc:
            outcome.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            while not worker.reader.reading:
                await anyio.sleep(0)
            assert worker.reader.waits == [pytest.approx(30.0)]
            worker.reader.stall = False  # from now on a read's timeout passes on the clock
            lease.client_left(0.5)
    # The read woke, looked at the new deadline, waited only the grace and gave up.
    assert worker.reader.waits == [pytest.approx(30.0), pytest.approx(0.5)]
    assert len(outcome) == 1
    assert "did not stop after the client left" in str(outcome[0])
    assert lease.timed_out


async def test_a_read_interrupted_with_patience_returns_none(owner, worker) -> None:
    lease = make(owner, worker, timeout=30.0)
    worker.reader.stall = True
    got: list[Any] = []

    async def read() -> None:
        got.append(await lease.read(patience=20.0))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            while not worker.reader.reading:
                await anyio.sleep(0)
            lease.client_left(1.0)
    assert got == [None]  # the caller decides what the client's leaving means
    assert not lease.timed_out


# -- the kill ----------------------------------------------------------------------------


async def test_kill_is_sigkill_at_once_unless_the_worker_was_late(owner, worker) -> None:
    lease = make(owner, worker)
    await lease.kill()
    assert worker.terminated == [0]


async def test_kill_gives_a_late_worker_the_grace(owner, worker, clock) -> None:
    lease = make(owner, worker, timeout=1.0)
    clock.advance(1.0)
    with pytest.raises(WorkerTimeoutError):
        await lease.read()
    await lease.kill()
    assert worker.terminated == [KILL_GRACE]


async def test_kill_finishes_even_when_the_caller_is_cancelled(owner, worker) -> None:
    lease = make(owner, worker)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await lease.kill()
    assert worker.terminated == [0]
    assert owner.calls == []  # killing is not ending: the caller still discards
