"""The relay on its own: a fake exchange (the client's side) and a fake lease (the
worker's side), both scripted by the test, and no process, socket or timer.

The fake lease's ``read`` hands out what the test queued, one read at a time; with
nothing queued it returns None to a read with patience and otherwise waits until the
test queues more. What the relay writes to the worker is decoded back into frames.
Everything either side did is also written, in order, to one journal, so a test can
say what happened before what.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import pytest

from wsgipool._config import Config
from wsgipool._errors import (
    LeaseEndedError,
    ProtocolError,
    WorkerGoneError,
    WorkerTimeoutError,
)
from wsgipool._front.budget import BufferBudget
from wsgipool._front.guard import Refusals
from wsgipool._front.intake import BodyRefused
from wsgipool._front.relay import PATIENCE, Relay
from wsgipool._front.response import END_MESSAGE
from wsgipool._wire import frames as proto

try:  # the reader has lived in frames.py; it may have a module of its own
    from wsgipool._wire.reader import FrameReader  # type: ignore[import-not-found]
except ImportError:
    from wsgipool._wire.frames import FrameReader

pytestmark = pytest.mark.anyio

KIB = 1024
HEADERS = [(b"content-type", b"text/plain")]
NOTHING_YET = None  # a read whose patience runs out
DISCONNECT = {"type": "http.disconnect"}


def chunk(body: bytes, more: bool = True) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


def start(status: int = 200) -> proto.Start:
    return proto.Start(status, HEADERS)


class FakeWorker:
    id = 7
    pid = 4_000_007  # above any real pid_max

    def exit_status(self) -> str:
        return "killed by SIGKILL"


class FakeLease:
    """The lease as the relay uses it; ``reads`` is the script of what the worker sends:
    a list of frames per read, NOTHING_YET, or an exception to raise."""

    def __init__(self, journal: list[tuple[Any, ...]]) -> None:
        self.journal = journal
        self.worker = FakeWorker()
        self.reads: deque[list[Any] | BaseException | None] = deque()
        self.patience: list[float | None] = []  # of every read, in order
        self.sent: list[bytes] = []  # one entry per send(), its pieces joined
        self.tried: list[bytes] = []
        self.endings: list[tuple[Any, ...]] = []  # every call that ends the lease
        self.ended = False
        self.kills = 0
        self.paused = self.resumed = 0
        self.left: list[float] = []  # the grace of every client_left()
        self._more: anyio.Event | None = None

    def push(self, *reads: list[Any] | BaseException | None) -> None:
        self.reads.extend(reads)
        if self._more is not None:
            self._more.set()

    async def read(self, patience: float | None = None) -> list[Any] | None:
        self.patience.append(patience)
        await anyio.sleep(0)
        while not self.reads:
            if patience is not None:
                return None
            self._more = anyio.Event()
            await self._more.wait()
        entry = self.reads.popleft()
        if isinstance(entry, BaseException):
            raise entry
        return entry

    @property
    def reading(self) -> bool:
        return self._more is not None and not self._more.is_set()

    def send(self, *pieces: bytes | bytearray | memoryview) -> Coroutine[Any, Any, None]:
        if self.ended:  # as the real lease: refused at once, not when awaited
            raise LeaseEndedError("the lease ended")
        return self._write(b"".join(bytes(piece) for piece in pieces))

    async def _write(self, data: bytes) -> None:
        await anyio.sleep(0)
        self.sent.append(data)
        self.journal.append(("send", *FrameReader().feed(data)))

    def try_send(self, frame: bytes) -> bool:
        if self.ended:
            return False
        self.tried.append(frame)
        return True

    @property
    def frames(self) -> list[Any]:
        """Every frame sent to the worker, decoded."""
        reader = FrameReader()
        return [frame for data in self.sent for frame in reader.feed(data)]

    def _end(self, *how: Any) -> None:
        self.endings.append(how)
        self.journal.append(how)
        self.ended = True

    def release(self, served: bool = True) -> None:
        self._end("release" if served else "give_back")

    def discard(self, reason: str) -> None:
        self._end("discard", reason)

    async def kill(self) -> str:
        self.kills += 1
        self.journal.append(("kill",))
        await anyio.sleep(0)
        return ""

    def pause(self) -> None:
        self.paused += 1

    def resume(self) -> None:
        self.resumed += 1

    def client_left(self, grace: float) -> None:
        self.left.append(grace)
        self.journal.append(("client_left", grace))


class FakeExchange:
    """The request's client side: ``incoming`` is what the client sends (``receive``
    waits for more), ``delivered`` what reached the server. A closed ``gate`` holds every
    delivery; ``send_fails`` makes the server's send fail as for a client that is gone."""

    def __init__(self, journal: list[tuple[Any, ...]], tmp_path: Any, **options: Any) -> None:
        self.journal = journal
        self.config = Config.from_options({"workers": 1, "buffer_dir": str(tmp_path), **options})
        self.budget = BufferBudget(8 * 1024 * KIB)
        self.disconnected = False
        self.refused_with = 0
        self.failure: BaseException | None = None
        self.refusals = Refusals()
        self.client = ("10.0.0.1", 5000)
        self.pace = None
        self.request_line = "POST /upload"
        self.shares_files = True
        self.incoming: deque[dict[str, Any]] = deque()
        self.delivered: list[Any] = []
        self.refusals_counted: list[int] = []
        self.gate: anyio.Event | None = None
        self.send_fails = False
        self._arrived: anyio.Event | None = None

    def push(self, *messages: dict[str, Any]) -> None:
        self.incoming.extend(messages)
        if self._arrived is not None:
            self._arrived.set()

    async def receive(self) -> dict[str, Any]:
        await anyio.sleep(0)
        while not self.incoming:
            self._arrived = anyio.Event()
            await self._arrived.wait()
        message = self.incoming.popleft()
        self.journal.append(("receive", message))
        return message

    async def deliver(self, message: Any) -> None:
        if self.disconnected:  # as the exchange's own: nothing reaches a client gone
            return
        if self.gate is not None:
            await self.gate.wait()
        await anyio.sleep(0)
        if self.send_fails:
            self.disconnected = True
            return
        self.delivered.append(message)
        self.journal.append(("deliver", message))

    def count_refusal(self, exc: BodyRefused) -> None:
        self.refusals_counted.append(exc.status)

    # -- what the tests look at ------------------------------------------------------

    @property
    def statuses(self) -> list[int]:
        return [m["status"] for m in self.delivered if m["type"] == "http.response.start"]

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.delivered if "status" not in m)

    @property
    def ended(self) -> bool:
        return bool(self.delivered) and self.delivered[-1] is END_MESSAGE


@pytest.fixture
def journal() -> list[tuple[Any, ...]]:
    return []


@pytest.fixture
def lease(journal: list[tuple[Any, ...]]) -> FakeLease:
    return FakeLease(journal)


@pytest.fixture
def make(journal: list[tuple[Any, ...]], tmp_path: Any) -> Callable[..., FakeExchange]:
    def make(**options: Any) -> FakeExchange:
        return FakeExchange(journal, tmp_path, **options)

    return make


def relay(exchange: FakeExchange, lease: FakeLease) -> Relay:
    return Relay(exchange, lease)  # type: ignore[arg-type]


async def until(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until ``condition`` holds (the test's fail_after bounds it)."""
    while not condition():
        await anyio.sleep(0)


async def settle(turns: int = 50) -> None:
    """Let every other task run as far as it can get."""
    for _ in range(turns):
        await anyio.sleep(0)


def index(journal: list[tuple[Any, ...]], match: Callable[[tuple[Any, ...]], bool]) -> int:
    return next(i for i, entry in enumerate(journal) if match(entry))


# -- the fast path: complete in the first read ------------------------------------------------


async def test_a_small_response_is_released_before_it_is_sent(make, lease, journal) -> None:
    x = make()
    lease.push([start(201), proto.Body(b"hello"), proto.End()])
    with anyio.fail_after(5):
        await relay(x, lease).run(False, 0, None)
    assert lease.patience == [PATIENCE]  # one read, with patience
    assert journal[0] == ("release",)  # the worker is free before the client has a byte
    assert [entry[0] for entry in journal[1:]] == ["deliver"] * 3
    assert x.statuses == [201]
    assert x.body == b"hello"
    assert x.ended
    assert lease.endings == [("release",)]
    assert lease.sent == []
    assert x.budget.used == 0


# -- the streamed path ---------------------------------------------------------------------


async def test_a_streamed_response_arrives_whole_and_in_order(make, lease) -> None:
    x = make()
    lease.push(
        [start(), proto.Body(b"one ")],
        [proto.Body(b"two ")],
        [proto.Log(20, "halfway"), proto.Body(b"three ")],
        [proto.Body(b"four"), proto.End()],
    )
    with anyio.fail_after(5):
        await relay(x, lease).run(False, 0, None)
    assert lease.patience == [PATIENCE, None, None, None]
    assert x.statuses == [200]
    assert x.body == b"one two three four"
    assert x.ended
    assert lease.endings == [("release",)]
    assert lease.kills == 0
    assert lease.frames == []  # nothing to say to the worker: no body, no abort
    assert x.budget.used == 0


async def test_many_chunks_through_memory_and_disk_arrive_in_order(make, lease) -> None:
    x = make()
    x.budget = BufferBudget(300 * KIB)  # the spool goes to disk part way
    sizes = [1, 17, 4 * KIB, 50 * KIB, 200 * KIB, 3, 70 * KIB] * 6
    chunks = [bytes([n % 251]) * size for n, size in enumerate(sizes)]
    lease.push(NOTHING_YET)  # a slow app: the first read gets nothing
    lease.push([start()], *([proto.Body(c)] for c in chunks), [proto.End()])
    with anyio.fail_after(5):
        await relay(x, lease).run(False, 0, None)
    assert x.body == b"".join(chunks)
    assert x.ended
    assert lease.endings == [("release",)]
    assert x.budget.used == 0
    assert x.budget.on_disk == 0


async def test_the_worker_waits_while_the_client_is_past_max_response_buffer(make, lease) -> None:
    x = make(max_response_buffer=1000)
    x.gate = anyio.Event()  # the client takes nothing yet
    lease.push([start(), proto.Body(b"a" * 2000)], [proto.Body(b"b" * 10)], [proto.End()])
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(relay(x, lease).run, False, 0, None)
            await until(lambda: lease.paused == 1)
            await settle()
            assert len(lease.patience) == 2  # the pump does not read on meanwhile
            assert lease.resumed == 0  # the deadline stands still while the client is slow
            assert lease.endings == []
            x.gate.set()
    assert lease.resumed == 1
    assert x.body == b"a" * 2000 + b"b" * 10
    assert lease.endings == [("release",)]


# -- the worker fails ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [
        (WorkerTimeoutError("no response within 30.0s"), 504, "timeout"),
        (WorkerGoneError("pipe closed"), 502, "crashed"),
        (ProtocolError("undecodable frame"), 502, "protocol error"),
    ],
)
@pytest.mark.parametrize("first_read", [True, False], ids=["first read", "streamed"])
async def test_a_worker_failing_before_start_is_answered_by_the_front(
    make, lease, journal, error, status: int, reason: str, first_read: bool
) -> None:
    x = make()
    if not first_read:
        lease.push(NOTHING_YET, [proto.Log(20, "working")])
    lease.push(error)
    with anyio.fail_after(5):
        await relay(x, lease).run(False, 0, None)
    assert x.statuses == [status]
    assert len(x.delivered) == 2  # a whole short response of the front's own
    assert lease.kills == 1
    assert lease.endings == [("discard", reason)]
    assert index(journal, lambda e: e[0] == "kill") < index(journal, lambda e: e[0] == "discard")
    assert x.failure is None
    assert x.budget.used == 0


async def test_a_frame_the_front_never_gets_is_a_502(make, lease) -> None:
    x = make()
    lease.push([proto.Ready(123, -1)])
    with anyio.fail_after(5):
        await relay(x, lease).run(False, 0, None)
    assert x.statuses == [502]
    assert lease.endings == [("discard", "protocol error")]


@pytest.mark.parametrize("app_errors", ["raise", "respond"])
async def test_a_worker_gone_after_start_cuts_the_response(make, lease, app_errors: str) -> None:
    x = make(app_errors=app_errors)
    gone = WorkerGoneError("pipe closed")
    lease.push([start(), proto.Body(b"partial")], gone)
    with anyio.fail_after(5):
        await relay(x, lease).run(False, 0, None)
    assert x.statuses == [200]  # no 502 after the app's own start
    assert x.body == b"partial"
    assert not x.ended  # and no end: the client sees a response cut short
    assert lease.endings == [("discard", "crashed")]
    assert lease.kills == 1
    assert x.failure is (gone if app_errors == "raise" else None)


async def test_a_cancelled_relay_discards_the_worker(make, lease) -> None:
    x = make()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(relay(x, lease).run, False, 0, None)
            await until(lambda: lease.reading)
            tg.cancel_scope.cancel()
    assert lease.endings == [("discard", "cancelled")]


# -- the client leaves -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["disconnect", "send fails"])
@pytest.mark.parametrize("worker", ["stops", "is stuck"])
async def test_a_client_leaving_mid_response_stops_the_app(
    make, lease, journal, how: str, worker: str
) -> None:
    x = make(abort_grace=2.5)
    lease.push([start(), proto.Body(b"first")])
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(relay(x, lease).run, False, 0, None)
            await until(lambda: x.body == b"first")
            if how == "disconnect":
                x.push(DISCONNECT)
            else:
                x.send_fails = True
                lease.push([proto.Body(b"second")])
            await until(lambda: proto.Abort() in lease.frames)
            assert x.disconnected
            assert set(lease.left) == {2.5}  # called, with the app's grace to stop
            assert lease.endings == []
            if worker == "stops":
                lease.push([proto.Body(b"unread"), proto.End()])
            else:
                lease.push(WorkerTimeoutError("did not stop after the client left"))
    assert x.body == b"first"
    assert not x.ended
    assert set(lease.frames) == {proto.Abort()}
    assert index(journal, lambda e: e[0] == "client_left") < index(
        journal, lambda e: e[0] == "send"
    )
    if worker == "stops":
        assert lease.endings == [("release",)]
    else:
        assert lease.endings == [("discard", "stuck after disconnect")]
        assert x.statuses == [200]  # no 504 to a client that is gone
    assert x.failure is None
    assert x.budget.used == 0


# -- a body streamed to the worker (buffer_requests off) --------------------------------------


async def test_an_unbuffered_body_reaches_the_worker_as_it_comes(make, lease) -> None:
    x = make(buffer_requests=False)
    x.push(chunk(b"456"), chunk(b""), chunk(b"789", more=False))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(relay(x, lease).run, True, 3, None)
            await until(lambda: proto.Eof() in lease.frames)
            lease.push([start(), proto.Body(b"got 9 bytes"), proto.End()])
    assert lease.frames == [proto.Body(b"456"), proto.Body(b"789"), proto.Eof()]
    assert lease.patience == [None]  # no fast path for a body still coming
    assert x.body == b"got 9 bytes"
    assert x.ended
    assert lease.endings == [("release",)]


async def test_an_unbuffered_body_past_max_body_size_is_413_after_the_drain(
    make, lease, journal
) -> None:
    x = make(buffer_requests=False, max_body_size=10)
    x.push(chunk(b"123"), chunk(b"4567"))  # 5 came with the request: 8, then 12
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(relay(x, lease).run, True, 5, None)
            await until(lambda: proto.Abort() in lease.frames)
            assert x.refused_with == 413
            assert x.refusals_counted == [413]
            # The answer goes out at once, before the app has stopped: the client can
            # read it while it sends, and the drain's clock runs from then.
            await until(lambda: len(x.delivered) == 2)
            # The app stopped as told; what it had begun is not the answer.
            lease.push([start(200), proto.Body(b"app output"), proto.End()])
            await settle()
            assert len(x.delivered) == 2
            assert not x.ended  # the client is still sending: the answer waits for it
            assert lease.endings == [("release",)]
            x.push(chunk(b"x" * 100), chunk(b"last", more=False))
    assert lease.frames == [proto.Body(b"123"), proto.Abort()]  # no byte past the limit
    assert x.statuses == [413]
    assert (b"connection", b"close") in x.delivered[0]["headers"]
    assert x.delivered[1] == {
        "type": "http.response.body",
        "body": b"Payload Too Large",
        "more_body": True,
    }
    assert x.ended
    assert lease.left == []  # the client did not leave
    last_read = index(journal, lambda e: e[0] == "receive" and e[1]["body"] == b"last")
    assert last_read < len(journal) - 1
    assert journal[-1] == ("deliver", END_MESSAGE)
    assert x.failure is None
    assert x.budget.used == 0
