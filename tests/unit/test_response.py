"""One response's queue on its own: frames in through ``take()``, ASGI messages out
through ``next()``, with a fake client side (a config, a real memory budget and the
flags the exchange keeps) and no worker, server or relay.

The streamed path holds body chunks in a real :class:`~wsgipool._front.spool.Spool`; a
budget of 0 puts them in an unlinked file under the test's ``tmp_path``.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from wsgipool._config import Config
from wsgipool._errors import AppError, ProtocolError, RemoteTraceback
from wsgipool._front.budget import BufferBudget
from wsgipool._front.response import (
    CHUNK,
    COALESCE,
    COALESCE_BEHIND,
    END_MESSAGE,
    SLOW_MESSAGE,
    Response,
)
from wsgipool._wire import frames as proto
from wsgipool._wire.remote import dump

KIB = 1024
HEADERS = [(b"content-type", b"application/octet-stream")]
TRACEBACK = 'Traceback (most recent call last):\n  File "app.py", line 3\nValueError: boom'


@dataclass
class Client:
    """What a response needs of its exchange."""

    config: Config
    budget: BufferBudget
    disconnected: bool = False
    refused_with: int = 0
    failure: BaseException | None = None
    request_line: str = "GET /download"
    shares_files: bool = True


def client(budget: int = 8 * 1024 * KIB, tmp_path: Any = None, **options: Any) -> Client:
    if tmp_path is not None:
        options["buffer_dir"] = str(tmp_path)
    return Client(Config.from_options({"workers": 1, **options}), BufferBudget(budget))


def start(status: int = 200) -> proto.Start:
    return proto.Start(status, HEADERS)


def pattern(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that differ from chunk to chunk, so an order mistake shows."""
    return random.Random(seed).randbytes(size)


def take_all(response: Response) -> list[Any]:
    """Every queued message, each acknowledged as sent, as the relay's drain does."""
    out = []
    while response.items:
        out.append(response.next())
        response.sent()
    return out


def bodies(messages: list[dict[str, Any]]) -> list[bytes]:
    return [m["body"] for m in messages if m["type"] == "http.response.body" and "body" in m]


def chunk_sizes(messages: list[dict[str, Any]]) -> list[int]:
    return [len(m["body"]) for m in messages if m.get("more_body")]


# -- the plain queue (the first read, before any spool) ------------------------------------


def test_a_whole_response_is_start_then_body_then_end() -> None:
    response = Response(client())
    assert response.take([start(201), proto.Body(b"hello")]) is False
    assert response.take([proto.Body(b" world"), proto.End()]) is True
    messages = take_all(response)
    assert messages[0] == {"type": "http.response.start", "status": 201, "headers": HEADERS}
    assert messages[1:3] == [
        {"type": "http.response.body", "body": b"hello", "more_body": True},
        {"type": "http.response.body", "body": b" world", "more_body": True},
    ]
    assert messages[3] == END_MESSAGE
    assert not messages[3].get("more_body", False)
    assert len(messages) == 4


def test_frames_after_the_end_are_left_for_nobody() -> None:
    response = Response(client())
    assert response.take([start(), proto.End(), proto.Body(b"late")]) is True
    assert bodies(take_all(response)) == []  # take() stopped at END


def test_a_response_without_body_is_start_and_end() -> None:
    response = Response(client())
    assert response.take([start(204), proto.End()])
    messages = take_all(response)
    assert [m["type"] for m in messages] == ["http.response.start", "http.response.body"]
    assert messages[0]["status"] == 204
    assert messages[1] is END_MESSAGE


def test_the_start_waits_for_the_first_chunk() -> None:
    response = Response(client())
    response.take([start()])
    assert not response.items
    assert not response.committed
    response.take([proto.Body(b"x")])
    assert response.committed
    assert response.next()["type"] == "http.response.start"


def test_an_end_without_a_start_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="never started"):
        Response(client()).take([proto.End()])


@pytest.mark.parametrize(
    "frame",
    [proto.Ready(123, -1), proto.Failed("no", "tb"), proto.Request({}), proto.Eof(), proto.Abort()],
)
def test_a_frame_the_front_never_gets_is_a_protocol_error(frame: Any) -> None:
    with pytest.raises(ProtocolError, match=type(frame).__name__):
        Response(client()).take([start(), frame])


def test_spilled_without_being_asked_to_spill_is_a_protocol_error(tmp_path) -> None:
    response = Response(client(tmp_path=tmp_path))
    with pytest.raises(ProtocolError, match="not asked to spill"):
        response.take([start(), proto.Spilled(10)])  # no spool yet
    response.stream()
    assert not response.spill
    with pytest.raises(ProtocolError, match="not asked to spill"):
        response.take([proto.Spilled(10)])
    response.close()


def test_log_frames_go_to_the_app_log(caplog: pytest.LogCaptureFixture) -> None:
    response = Response(client())
    with caplog.at_level(logging.DEBUG, logger="wsgipool.app"):
        response.take([proto.Log(logging.WARNING, "disk nearly full"), start()])
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("wsgipool.app", logging.WARNING, "disk nearly full")
    ]
    assert not response.items


def test_chunks_for_a_client_that_left_are_dropped() -> None:
    side = client()
    response = Response(side)
    side.disconnected = True
    response.take([start(), proto.Body(b"nobody reads this")])
    assert not response.items
    assert not response.committed


# -- the streamed path: chunks in a spool ---------------------------------------------------


def test_stream_moves_the_queued_chunks_into_the_spool(tmp_path) -> None:
    side = client(tmp_path=tmp_path)
    response = Response(side)
    response.take([start(), proto.Body(b"abc"), proto.Body(b"defg")])
    spool = response.stream()
    assert spool.size == 7
    assert side.budget.used == 7  # the spool's copy is what the budget counts
    assert list(response.items)[1:] == [CHUNK, CHUNK]
    messages = take_all(response)
    assert messages[0]["type"] == "http.response.start"
    assert bodies(messages) == [b"abc", b"defg"]  # chunk boundaries kept
    response.close()
    assert side.budget.used == 0


def test_stream_keeps_an_end_already_queued(tmp_path) -> None:
    response = Response(client(tmp_path=tmp_path))
    response.take([start(), proto.Body(b"all"), proto.End()])
    response.stream()
    assert list(response.items)[1:] == [CHUNK, END_MESSAGE]
    response.close()


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (4, [16 * KIB] * 4),  # 48 KiB behind after the first: one message per chunk
        (5, [80 * KIB]),  # 64 KiB behind: the rest joins the first
    ],
)
def test_chunks_are_coalesced_only_when_the_front_is_far_behind(
    tmp_path, count: int, expected: list[int]
) -> None:
    assert COALESCE_BEHIND == 64 * KIB  # the sizes above are built on it
    response = Response(client(tmp_path=tmp_path))
    response.stream()
    chunks = [pattern(16 * KIB, seed) for seed in range(count)]
    response.take([start(), *map(proto.Body, chunks)])
    messages = take_all(response)
    assert chunk_sizes(messages) == expected
    assert b"".join(bodies(messages)) == b"".join(chunks)
    response.close()


def test_a_coalesced_message_stops_at_coalesce(tmp_path) -> None:
    assert COALESCE == 16 * 16 * KIB
    side = client(tmp_path=tmp_path)
    response = Response(side)
    response.stream()
    chunks = [pattern(16 * KIB, seed) for seed in range(40)]  # 640 KiB behind
    response.take([start(), *map(proto.Body, chunks), proto.End()])
    messages = take_all(response)
    assert chunk_sizes(messages) == [COALESCE, COALESCE, 128 * KIB]
    assert b"".join(bodies(messages)) == b"".join(chunks)
    assert messages[-1] is END_MESSAGE
    response.close()
    assert side.budget.used == 0


def test_chunks_that_keep_up_with_the_client_go_out_one_by_one(tmp_path) -> None:
    response = Response(client(tmp_path=tmp_path))
    response.stream()
    response.take([start()])
    sizes = []
    for seed in range(10):
        response.take([proto.Body(pattern(100 * KIB, seed))])
        sizes += chunk_sizes(take_all(response))
    assert sizes == [100 * KIB] * 10  # large, but never joined nor split
    response.close()


def test_a_budget_with_room_sends_a_large_chunk_whole(tmp_path) -> None:
    response = Response(client(tmp_path=tmp_path))
    response.stream()
    data = pattern(200 * KIB)
    response.take([start(), proto.Body(data)])
    assert bodies(take_all(response)) == [data]
    response.close()


def test_a_full_budget_makes_messages_of_at_most_slow_message(tmp_path) -> None:
    chunks = [pattern(100 * KIB, seed) for seed in range(3)]
    side = client(budget=300 * KIB, tmp_path=tmp_path)  # the spool fills it exactly
    response = Response(side)
    spool = response.stream()
    response.take([start(), *map(proto.Body, chunks)])
    assert not spool.on_disk
    assert side.budget.used == side.budget.limit
    messages = take_all(response)
    sizes = chunk_sizes(messages)
    assert max(sizes) == SLOW_MESSAGE  # split to fit, and joined up to it
    assert sum(sizes) == 300 * KIB
    assert b"".join(bodies(messages)) == b"".join(chunks)
    response.close()
    assert side.budget.used == 0


def test_a_spool_on_disk_makes_messages_of_at_most_slow_message(tmp_path) -> None:
    side = client(budget=0, tmp_path=tmp_path)
    response = Response(side)
    spool = response.stream()
    chunks = [pattern(100 * KIB, 1), *(pattern(10 * KIB, seed) for seed in range(2, 22))]
    response.take([start(), *map(proto.Body, chunks), proto.End()])
    assert spool.on_disk
    assert side.budget.on_disk == 300 * KIB
    messages = take_all(response)
    sizes = chunk_sizes(messages)
    assert max(sizes) == SLOW_MESSAGE
    assert sum(sizes) == 300 * KIB
    assert b"".join(bodies(messages)) == b"".join(chunks)
    assert messages[-1] is END_MESSAGE
    assert side.budget.used == 0  # nothing of it was held in memory
    response.close()
    assert side.budget.on_disk == 0
    assert list(tmp_path.iterdir()) == []


def test_a_spool_on_disk_makes_small_messages_even_with_room_in_the_budget(tmp_path) -> None:
    side = client(budget=64 * 1024 * KIB, tmp_path=tmp_path)
    response = Response(side)
    spool = response.stream()
    chunks = [pattern(256 * KIB, seed) for seed in range(6)]  # 1 MiB a spool in memory
    response.take([start(), *map(proto.Body, chunks)])
    assert spool.on_disk
    messages = take_all(response)
    sizes = chunk_sizes(messages)
    assert max(sizes) == SLOW_MESSAGE
    assert b"".join(bodies(messages)) == b"".join(chunks)
    response.close()
    assert side.budget.used == 0


@pytest.mark.parametrize("seed", range(4))
def test_every_byte_comes_out_once_and_in_order(tmp_path, seed: int) -> None:
    """Chunks of every size, taken and sent in a random interleaving, with a budget that
    sends the spool to disk part way."""
    rng = random.Random(seed)
    side = client(budget=600 * KIB, tmp_path=tmp_path)
    response = Response(side)
    response.stream()
    response.take([start()])
    sent: list[bytes] = []
    expected: list[bytes] = []
    for index in range(60):
        data = pattern(rng.choice([1, 100, 4 * KIB, 30 * KIB, 70 * KIB, 300 * KIB]), index)
        expected.append(data)
        response.take([proto.Body(data)])
        for _ in range(rng.randrange(3)):
            if response.items:
                sent += bodies([response.next()])
                response.sent()
    response.take([proto.End()])
    messages = take_all(response)
    assert messages[-1] is END_MESSAGE
    sent += bodies(messages)
    assert b"".join(sent) == b"".join(expected)
    response.close()
    assert side.budget.used == 0
    assert side.budget.on_disk == 0


# -- the budget of messages sent ------------------------------------------------------------


def test_a_message_is_counted_until_the_next_one_was_sent(tmp_path) -> None:
    side = client(tmp_path=tmp_path)
    budget = side.budget
    response = Response(side)
    response.stream()
    response.take([start(), proto.Body(pattern(200 * KIB))])
    response.next()  # the start
    response.sent()
    assert budget.used == 200 * KIB  # in the spool
    assert len(response.next()["body"]) == 200 * KIB
    assert budget.used == 200 * KIB  # out of the spool, into the server's buffer
    response.sent()
    assert budget.used == 200 * KIB  # still there until the next message was taken
    response.take([proto.Body(pattern(100 * KIB, 1))])
    assert budget.used == 300 * KIB
    response.next()
    response.sent()  # the server took the 100 KiB: the 200 KiB have left its buffer
    assert budget.used == 100 * KIB
    response.take([proto.End()])
    assert response.next() is END_MESSAGE
    response.sent()
    assert budget.used == 0
    response.close()
    assert budget.used == 0


def test_close_gives_back_what_was_held_for_messages_not_acknowledged(tmp_path) -> None:
    side = client(tmp_path=tmp_path)
    response = Response(side)
    response.stream()
    response.take([start(), proto.Body(pattern(200 * KIB)), proto.Body(b"left in the spool")])
    response.next()
    response.sent()
    response.next()  # given to the server, which never said it took it
    assert side.budget.used > 0
    response.close()
    assert side.budget.used == 0


def test_a_message_made_without_room_is_not_counted(tmp_path) -> None:
    side = client(budget=100 * KIB, tmp_path=tmp_path)
    response = Response(side)
    response.stream()
    response.take([start(), proto.Body(pattern(100 * KIB))])
    take_all(response)
    assert side.budget.used == 0  # messages of SLOW_MESSAGE at most are not held
    response.close()


def test_a_chunk_that_cannot_be_held_cuts_the_client_off(tmp_path) -> None:
    side = client(budget=0, tmp_path=tmp_path / "missing")
    response = Response(side)
    response.stream()
    response.take([start(), proto.Body(b"nowhere to put this")])
    assert side.disconnected
    assert CHUNK not in response.items
    response.close()


# -- the worker writes the spool's spill file -------------------------------------------------


def test_spilled_chunks_are_read_from_the_spill_file_in_order(tmp_path) -> None:
    side = client(tmp_path=tmp_path)
    response = Response(side)
    spool = response.stream()
    response.take([start(), proto.Body(b"piped ")])
    fd = spool.spill_file()
    response.spill = True
    os.write(fd, b"spilled ")  # what the worker writes, then announces
    response.take([proto.Spilled(8)])
    os.write(fd, b"and more")
    response.take([proto.Spilled(8), proto.End()])
    assert list(response.items)[1:] == [CHUNK, CHUNK, END_MESSAGE]  # the two merged
    assert bodies(take_all(response)) == [b"piped ", b"spilled and more"]
    response.close()
    assert side.budget.on_disk == 0


# -- the front's own answers ------------------------------------------------------------------


def test_own_answers_when_nothing_was_committed() -> None:
    response = Response(client())
    response.own(502, "Bad Gateway")
    response.own(504, "Gateway Timeout")  # the first answer stands
    first, body = take_all(response)
    assert first["status"] == 502
    assert (b"content-length", b"11") in first["headers"]
    assert body == {"type": "http.response.body", "body": b"Bad Gateway"}


def test_own_replaces_a_start_that_had_no_body_yet() -> None:
    response = Response(client())
    response.take([start(200)])
    response.own(504, "Gateway Timeout")
    assert [m.get("status") for m in take_all(response)] == [504, None]


def test_own_says_nothing_once_the_apps_response_began() -> None:
    response = Response(client())
    response.take([start(200), proto.Body(b"partial")])
    response.own(502, "Bad Gateway")
    messages = take_all(response)
    assert [m.get("status") for m in messages] == [200, None]
    assert bodies(messages) == [b"partial"]


# -- the app failed ---------------------------------------------------------------------------


def error_frame(exc: BaseException | None) -> proto.Error:
    return proto.Error("GET /download failed\n" + TRACEBACK, dump(exc) if exc else None)


def test_an_app_error_is_raised_as_the_apps_own_exception() -> None:
    side = client()
    response = Response(side)
    assert response.take([error_frame(ValueError("boom"))]) is True
    assert type(side.failure) is ValueError
    assert side.failure.args == ("boom",)
    assert isinstance(side.failure.__cause__, RemoteTraceback)
    assert "app.py" in str(side.failure.__cause__)
    assert not response.items  # the server answers 500 for the exception


@pytest.mark.parametrize("shares_files", [False, True])
def test_an_app_error_that_cannot_be_unpickled_is_app_error(shares_files: bool) -> None:
    side = client()
    side.shares_files = shares_files
    response = Response(side)
    # A worker of another user is never unpickled; one with no pickle has only text.
    response.take([error_frame(ValueError("boom") if not shares_files else None)])
    assert type(side.failure) is AppError
    assert str(side.failure) == "GET /download failed: ValueError: boom"
    assert side.failure.traceback == TRACEBACK


def test_app_errors_respond_answers_500(caplog: pytest.LogCaptureFixture) -> None:
    side = client(app_errors="respond")
    response = Response(side)
    with caplog.at_level(logging.ERROR, logger="wsgipool.app"):
        assert response.take([start(), error_frame(ValueError("boom"))]) is True
    assert side.failure is None
    first, body = take_all(response)
    assert first["status"] == 500
    assert body["body"] == b"Internal Server Error"
    assert any("ValueError: boom" in r.getMessage() for r in caplog.records)


def test_app_errors_respond_after_the_body_began_cuts_the_response() -> None:
    side = client(app_errors="respond")
    response = Response(side)
    response.take([start(), proto.Body(b"half"), error_frame(ValueError("boom"))])
    messages = take_all(response)
    assert [m.get("status") for m in messages] == [200, None]
    assert bodies(messages) == [b"half"]  # no 500, and no end: the client sees it cut
    assert side.failure is None


# -- a body the front refused -----------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("last", [proto.End(), error_frame(ValueError("stopped"))])
async def test_a_refused_body_is_answered_413_ended_after_the_drain(last: Any) -> None:
    side = client()
    response = Response(side)
    side.refused_with = 413
    response.drained = anyio.Event()
    assert response.take([start(200), proto.Body(b"app output"), last]) is True
    assert side.failure is None  # the app's error is the front's 413 now
    first, body, end = take_all(response)
    assert first["status"] == 413
    assert (b"connection", b"close") in first["headers"]
    assert body == {"type": "http.response.body", "body": b"Payload Too Large", "more_body": True}
    assert end is END_MESSAGE


def test_a_refused_body_without_a_drain_is_answered_at_once() -> None:
    side = client()
    side.refused_with = 408
    response = Response(side)
    response.take([start(200), proto.End()])
    first, body = take_all(response)
    assert first["status"] == 408
    assert body == {"type": "http.response.body", "body": b"Request Timeout"}
