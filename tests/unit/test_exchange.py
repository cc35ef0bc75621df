"""The exchange's own part of a request, with a fake pool and no worker: the first
message and the refusals the front decides alone, sending to the server, and handing the
request to a worker (a fake lease that records what it is sent).
"""

from __future__ import annotations

import types
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import pytest

from wsgipool._config import Config
from wsgipool._errors import (
    AppLoadError,
    OverloadedError,
    PoolClosedError,
    RequestNotSentError,
    WorkerGoneError,
    WorkerStartError,
)
from wsgipool._front.budget import BufferBudget
from wsgipool._front.exchange import Exchange
from wsgipool._front.guard import Refusals
from wsgipool._wire import frames as proto

try:  # the reader has lived in frames.py; it may have a module of its own
    from wsgipool._wire.reader import FrameReader  # type: ignore[import-not-found]
except ImportError:
    from wsgipool._wire.frames import FrameReader

pytestmark = pytest.mark.anyio

KIB = 1024
END = {"type": "http.response.body", "body": b"", "more_body": False}


def chunk(body: bytes, more: bool = True) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


class FakeLease:
    """A worker that answers every request with ``reply`` and records what it was sent."""

    def __init__(self, reply: list[Any] | None = None, send_error: Exception | None = None):
        self.reply = reply or [proto.Start(200, []), proto.Body(b"ok"), proto.End()]
        self.send_error = send_error
        self.sent: list[bytes] = []
        self.endings: list[tuple[Any, ...]] = []
        self.ended = False
        self.request_sent = False  # the pool never writes ahead here
        self.worker = types.SimpleNamespace(id=1, pid=4_000_001, exit_status=lambda: "running")

    def send(self, *pieces: bytes | bytearray | memoryview) -> Coroutine[Any, Any, None]:
        return self._write(b"".join(bytes(piece) for piece in pieces))

    async def _write(self, data: bytes) -> None:
        await anyio.sleep(0)
        if self.send_error is not None:
            raise self.send_error
        self.sent.append(data)

    @property
    def frames(self) -> list[Any]:
        reader = FrameReader()
        return [frame for data in self.sent for frame in reader.feed(data)]

    async def read(self, patience: float | None = None) -> list[Any]:
        await anyio.sleep(0)
        return self.reply

    def _end(self, *how: Any) -> None:
        self.endings.append(how)
        self.ended = True

    def release(self, served: bool = True) -> None:
        self._end("release" if served else "give_back")

    def discard(self, reason: str) -> None:
        self._end("discard", reason)

    def describe(self, about: Any) -> None:
        self.about = about


class FakePool:
    """What the exchange uses of the pool: its config, whether workers share the front's
    files, how many workers it may have, and ``acquire``, which hands out ``leases`` in
    turn (an exception in their place is raised)."""

    def __init__(self, config: Config, *leases: FakeLease | Exception) -> None:
        self.config = config
        self.launcher = types.SimpleNamespace(identity=None)
        self.limit = 2
        self.leases = deque(leases)
        self.acquired = 0

    async def acquire(self, watch: Any, payload: Any = ()) -> FakeLease:
        await anyio.sleep(0)
        self.acquired += 1
        lease = self.leases.popleft()
        if isinstance(lease, Exception):
            raise lease
        return lease


class Server:
    """The ASGI server's side: a scripted ``receive`` and a recording ``send``."""

    def __init__(self, *incoming: dict[str, Any]) -> None:
        self.incoming = deque(incoming)
        self.journal: list[tuple[str, Any]] = []
        self.send_error: Exception | None = None

    async def receive(self) -> dict[str, Any]:
        await anyio.sleep(0)
        assert self.incoming, "receive() called with nothing more to give"
        message = self.incoming.popleft()
        self.journal.append(("receive", message))
        return message

    async def send(self, message: dict[str, Any]) -> None:
        await anyio.sleep(0)
        if self.send_error is not None:
            raise self.send_error
        self.journal.append(("send", message))

    @property
    def sent(self) -> list[dict[str, Any]]:
        return [message for what, message in self.journal if what == "send"]


def scope(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/upload",
        "headers": list(headers),
        "client": ("10.0.0.1", 5000),
    }


@pytest.fixture
def make(tmp_path: Any) -> Callable[..., tuple[Exchange, Server, FakePool]]:
    def make(
        *incoming: dict[str, Any],
        headers: tuple[tuple[bytes, bytes], ...] = (),
        leases: tuple[FakeLease | Exception, ...] = (),
        **options: Any,
    ) -> tuple[Exchange, Server, FakePool]:
        config = Config.from_options({"workers": 1, "buffer_dir": str(tmp_path), **options})
        pool = FakePool(config, *leases)
        server = Server(*incoming)
        budget = BufferBudget(1024 * KIB)
        exchange = Exchange(
            pool,  # type: ignore[arg-type]
            budget,
            Refusals(),
            scope(*headers),
            server.receive,
            server.send,
        )
        return exchange, server, pool

    return make


# -- the first message --------------------------------------------------------------------


async def test_a_request_without_a_body_gets_its_message_at_once(make) -> None:
    exchange, server, _ = make(chunk(b"", more=False))
    assert await exchange.first_message({"REQUEST_METHOD": "GET"}) == chunk(b"", more=False)
    assert exchange.pace is None  # nothing to pace
    assert server.sent == []


async def test_a_declared_body_within_the_limit_is_paced_from_its_first_message(make) -> None:
    exchange, server, _ = make(chunk(b"12345"), max_body_size=100)
    message = await exchange.first_message({"CONTENT_LENGTH": "100"})
    assert message == chunk(b"12345")
    assert exchange.pace is not None
    assert exchange.pace.moved == 5
    assert server.sent == []


async def test_a_declared_body_over_the_limit_is_413_after_the_rest_was_drained(make) -> None:
    exchange, server, _ = make(
        chunk(b"a" * 1000),
        chunk(b"b" * 1000),
        chunk(b"c" * 10, more=False),
        headers=((b"content-length", b"2010"),),
        max_body_size=100,
    )
    with anyio.fail_after(5):
        assert await exchange.first_message({"CONTENT_LENGTH": "2010"}) is None
    start, body, end = server.sent
    assert start["status"] == 413
    assert (b"connection", b"close") in start["headers"]
    assert body["body"] == b"Payload Too Large"
    assert body["more_body"] is True  # the answer is out while the body still comes
    assert end == END
    assert [what for what, _ in server.journal] == ["send", "send", *["receive"] * 3, "send"]
    assert not server.incoming  # all of it was read, so the client reads the answer
    assert exchange.refusals.requests == {(413, "body too large"): 1}


async def test_a_declared_body_waiting_for_continue_is_413_and_drained_if_it_comes(
    make,
) -> None:
    # Some servers send 100 Continue as soon as they read the head (hypercorn): the body
    # then comes, and is drained like any other before the answer ends.
    exchange, server, _ = make(
        chunk(b"a" * 1000),
        chunk(b"b" * 10, more=False),
        headers=((b"content-length", b"1010"), (b"expect", b"100-continue")),
        max_body_size=100,
    )
    with anyio.fail_after(5):
        assert await exchange.first_message({"CONTENT_LENGTH": "1010"}) is None
    start, body, end = server.sent
    assert start["status"] == 413
    assert body == {"type": "http.response.body", "body": b"Payload Too Large", "more_body": True}
    assert end == END
    assert not server.incoming
    assert exchange.refusals.requests == {(413, "body too large"): 1}


async def test_a_declared_body_waiting_for_continue_that_never_comes_ends_after_a_short_gap(
    make,
) -> None:
    # Where the server sends 100 Continue only when the body is asked for (uvicorn), a
    # refused client sends nothing: the answer ends after EXPECT_GAP, not LINGER_GAP.
    from wsgipool._front.linger import EXPECT_GAP, LINGER_GAP

    exchange, server, _ = make(
        headers=((b"content-length", b"2010"), (b"expect", b"100-continue")),
        max_body_size=100,
    )
    never = anyio.Event()

    async def silent() -> dict[str, Any]:
        await never.wait()
        raise AssertionError("unreachable")

    exchange.receive = silent
    assert EXPECT_GAP < LINGER_GAP
    with anyio.fail_after(EXPECT_GAP + (LINGER_GAP - EXPECT_GAP) / 2):
        assert await exchange.first_message({"CONTENT_LENGTH": "2010"}) is None
    assert [m.get("status") for m in server.sent] == [413, None, None]
    assert server.sent[-1] == END


async def test_a_declared_body_that_never_comes_is_408(make) -> None:
    never = anyio.Event()
    exchange, server, _ = make(client_timeout=0.05, min_client_rate=0)

    async def silent() -> dict[str, Any]:
        await never.wait()
        raise AssertionError("unreachable")

    exchange.receive = silent
    with anyio.fail_after(5):
        assert await exchange.first_message({"HTTP_TRANSFER_ENCODING": "chunked"}) is None
    assert [m.get("status") for m in server.sent] == [408, None]
    assert exchange.refusals.requests == {(408, "body too slow"): 1}


# -- sending ---------------------------------------------------------------------------------


async def test_respond_answers_only_before_anything_was_sent(make) -> None:
    exchange, server, _ = make()
    assert await exchange.respond(503, "Service Unavailable", (b"retry-after", b"1"))
    assert not await exchange.respond(502, "Bad Gateway")
    start, body = server.sent
    assert start["status"] == 503
    assert (b"retry-after", b"1") in start["headers"]
    assert body["body"] == b"Service Unavailable"


@pytest.mark.parametrize("error", [OSError("connection reset"), RuntimeError("bad header")])
async def test_a_send_that_fails_ends_the_response_not_the_request(make, error) -> None:
    exchange, server, _ = make()
    server.send_error = error
    await exchange.deliver({"type": "http.response.start", "status": 200, "headers": []})
    assert exchange.disconnected
    server.send_error = None
    await exchange.deliver({"type": "http.response.body", "body": b"lost"})
    assert server.sent == []  # nothing goes to a client that is gone


# -- handing the request to a worker -----------------------------------------------------------


async def test_a_small_request_goes_to_the_worker_in_one_write(make) -> None:
    lease = FakeLease()
    exchange, server, _ = make(leases=(lease,))
    cgi = {"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "3"}
    with anyio.fail_after(5):
        await exchange.run(cgi, chunk(b"abc", more=False))
    assert len(lease.sent) == 1
    assert lease.frames == [proto.Request(cgi), proto.Body(b"abc"), proto.Eof()]
    assert [m.get("status") for m in server.sent] == [200, None, None]
    assert lease.endings == [("release",)]


async def test_a_buffered_body_is_read_whole_and_its_length_sent(make) -> None:
    lease = FakeLease()
    exchange, _, _ = make(chunk(b"def"), chunk(b"gh", more=False), leases=(lease,))
    cgi = {"REQUEST_METHOD": "POST", "HTTP_TRANSFER_ENCODING": "chunked"}
    with anyio.fail_after(5):
        await exchange.run(cgi, chunk(b"abc"))
    request, *body, eof = lease.frames
    assert request.environ["CONTENT_LENGTH"] == "8"  # exact, though it was chunked
    assert b"".join(frame.data for frame in body) == b"abcdefgh"
    assert eof == proto.Eof()


async def test_a_body_over_the_limit_never_reaches_a_worker(make) -> None:
    exchange, server, pool = make(max_body_size=2, buffer_requests=False)
    with anyio.fail_after(5):
        await exchange.run({"CONTENT_LENGTH": "3"}, chunk(b"abc", more=False))
    assert pool.acquired == 0
    assert [m.get("status") for m in server.sent] == [413, None]


async def test_a_worker_gone_before_the_request_is_replaced(make) -> None:
    dead = FakeLease(send_error=RequestNotSentError("gone while idle"))
    lease = FakeLease()
    exchange, server, pool = make(leases=(dead, lease))
    with anyio.fail_after(5):
        await exchange.run({"REQUEST_METHOD": "GET"}, chunk(b"", more=False))
    assert dead.endings == [("discard", "died while idle")]
    assert lease.endings == [("release",)]
    assert pool.acquired == 2
    assert [m.get("status") for m in server.sent] == [200, None, None]


async def test_a_worker_gone_mid_request_is_502_without_retry(make) -> None:
    dead = FakeLease(send_error=WorkerGoneError("gone mid-write"))
    exchange, server, pool = make(leases=(dead, FakeLease()))
    with anyio.fail_after(5):
        await exchange.run({"REQUEST_METHOD": "GET"}, chunk(b"", more=False))
    assert dead.endings == [("discard", "died while idle")]
    assert pool.acquired == 1  # part of the request may have been read: not sent again
    assert [m.get("status") for m in server.sent] == [502, None]


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (OverloadedError("queue full"), 503, b"1"),
        (PoolClosedError("shutting down"), 503, b"1"),
        (AppLoadError("ImportError: no app", retry_after=2.5), 503, b"3"),
        (WorkerStartError("fork failed"), 502, None),
    ],
)
async def test_no_worker_is_answered_by_the_front(make, error, status, retry_after) -> None:
    exchange, server, _ = make(leases=(error,))
    with anyio.fail_after(5):
        await exchange.run({"REQUEST_METHOD": "GET"}, chunk(b"", more=False))
    start, _body = server.sent
    assert start["status"] == status
    assert dict(start["headers"]).get(b"retry-after") == retry_after
    assert exchange.failure is None
