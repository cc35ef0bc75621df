"""The front's intake on its own: the client's pace, the body size rule, and reading a
whole body into a real spool from a scripted ``receive``.

:class:`Pace` is checked against a clock the test moves (its ``time.monotonic``); the
body reads use anyio's own clock, so the one "too slow" case waits a few hundredths of
a second for real.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from wsgipool._config import Config
from wsgipool._front import intake
from wsgipool._front.budget import BufferBudget
from wsgipool._front.intake import BodyRefused, Pace, check_size, first_message, take_body
from wsgipool._front.spool import Spool

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(intake, "time", types.SimpleNamespace(monotonic=clock))
    return clock


def config(**options: Any) -> Config:
    return Config.from_options({"workers": 1, **options})


def scripted(*messages: dict[str, Any]) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A ``receive`` that gives ``messages`` in order, and fails if asked for more."""
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        await anyio.sleep(0)
        assert queue, "receive() called after the last message"
        return queue.pop(0)

    return receive


def silent(never: anyio.Event) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A ``receive`` whose client never sends anything."""

    async def receive() -> dict[str, Any]:
        await never.wait()
        raise AssertionError("unreachable")

    return receive


def chunk(body: bytes, more: bool = True) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


def drain(spool: Spool) -> bytes:
    parts = []
    while (part := spool.get()) is not None:
        parts.append(bytes(part))
    return b"".join(parts)


# -- Pace -----------------------------------------------------------------------------------


def test_without_a_rate_every_wait_may_last_the_client_timeout(clock: Clock) -> None:
    pace = Pace(config(client_timeout=7.0, min_client_rate=0))
    for _ in range(3):
        assert pace.begin() == 7.0
        clock.now += 6.0
        pace.end(0)
    assert pace.blamed == pytest.approx(18.0)
    assert pace.moved == 0


def test_the_grace_holds_before_the_rate_applies(clock: Clock) -> None:
    pace = Pace(config(client_timeout=30.0, min_client_rate=100, client_rate_grace=5.0))
    assert pace.begin() == 5.0  # nothing moved yet: the grace is all there is
    clock.now += 2.0
    pace.end(0)
    assert pace.begin() == pytest.approx(3.0)  # what is left of the grace


def test_bytes_moved_buy_time_at_the_minimum_rate(clock: Clock) -> None:
    pace = Pace(config(client_timeout=30.0, min_client_rate=100, client_rate_grace=5.0))
    pace.begin()
    clock.now += 1.0
    pace.end(1000)  # 1000 bytes at 100 B/s pay for 10 s, of which 1 s is spent
    assert pace.begin() == pytest.approx(9.0)
    clock.now += 9.5
    pace.end(0)
    assert pace.begin() <= 0  # behind the rate: too slow
    assert pace.why() == "1000 bytes in 10.5s"


def test_the_client_timeout_caps_every_wait(clock: Clock) -> None:
    pace = Pace(config(client_timeout=2.0, min_client_rate=10, client_rate_grace=5.0))
    pace.begin()
    pace.end(10**6)  # far ahead of the rate
    assert pace.begin() == 2.0


# -- check_size -------------------------------------------------------------------------


def test_check_size_allows_up_to_the_limit_and_refuses_past_it() -> None:
    check_size(100, 100)
    check_size(10**12, None)  # no limit
    with pytest.raises(BodyRefused, match="over max_body_size") as refused:
        check_size(101, 100)
    assert refused.value.status == 413
    assert refused.value.reason == "body too large"
    with pytest.raises(BodyRefused, match="the upload is over"):
        check_size(2, 1, what="the upload")


# -- take_body --------------------------------------------------------------------------


@pytest.fixture
def budget() -> BufferBudget:
    return BufferBudget(1024 * 1024)


async def test_a_body_in_one_message(tmp_path, budget: BufferBudget) -> None:
    cfg = config(buffer_dir=str(tmp_path))
    spool = await take_body(scripted(), chunk(b"hello", more=False), cfg, budget, Pace(cfg))
    assert spool is not None
    assert spool.size == 5
    assert drain(spool) == b"hello"
    spool.close()
    assert budget.used == 0


async def test_a_body_in_many_messages(tmp_path, budget: BufferBudget) -> None:
    cfg = config(buffer_dir=str(tmp_path))
    receive = scripted(chunk(b""), chunk(b"b" * 1000), chunk(b"c", more=False))
    spool = await take_body(receive, chunk(b"a"), cfg, budget, Pace(cfg))
    assert spool is not None
    assert spool.size == 1002
    assert budget.used == 1002  # held in memory, within the budget
    assert drain(spool) == b"a" + b"b" * 1000 + b"c"
    spool.close()


async def test_a_body_past_the_budget_goes_to_disk(tmp_path) -> None:
    budget = BufferBudget(0)
    cfg = config(buffer_dir=str(tmp_path))
    receive = scripted(chunk(b"y" * 3000), chunk(b"z", more=False))
    spool = await take_body(receive, chunk(b"x" * 3000), cfg, budget, Pace(cfg))
    assert spool is not None
    assert spool.on_disk
    assert budget.on_disk == 6001
    assert drain(spool) == b"x" * 3000 + b"y" * 3000 + b"z"
    spool.close()
    assert list(tmp_path.iterdir()) == []  # unlinked: nothing left behind


async def test_a_body_past_max_body_size_is_413(tmp_path, budget: BufferBudget) -> None:
    cfg = config(buffer_dir=str(tmp_path), max_body_size=10)
    receive = scripted(chunk(b"12345"), chunk(b"6", more=False))
    with pytest.raises(BodyRefused) as refused:
        await take_body(receive, chunk(b"123456"), cfg, budget, Pace(cfg))
    assert refused.value.status == 413
    assert budget.used == 0  # what was taken is given back


async def test_a_first_message_past_max_body_size_is_413(tmp_path, budget: BufferBudget) -> None:
    cfg = config(buffer_dir=str(tmp_path), max_body_size=3)
    with pytest.raises(BodyRefused) as refused:
        await take_body(scripted(), chunk(b"1234", more=False), cfg, budget, Pace(cfg))
    assert refused.value.status == 413
    assert budget.used == 0


async def test_a_body_exactly_max_body_size_is_taken(tmp_path, budget: BufferBudget) -> None:
    cfg = config(buffer_dir=str(tmp_path), max_body_size=6)
    receive = scripted(chunk(b"456", more=False))
    spool = await take_body(receive, chunk(b"123"), cfg, budget, Pace(cfg))
    assert spool is not None
    assert drain(spool) == b"123456"
    spool.close()


async def test_a_client_that_stops_sending_is_408(tmp_path, budget: BufferBudget) -> None:
    cfg = config(buffer_dir=str(tmp_path), client_timeout=0.05, min_client_rate=0)
    never = anyio.Event()
    with anyio.fail_after(5), pytest.raises(BodyRefused) as refused:
        await take_body(silent(never), chunk(b"partial"), cfg, budget, Pace(cfg))
    assert refused.value.status == 408
    assert refused.value.reason == "body too slow"
    assert budget.used == 0


async def test_a_client_behind_the_rate_is_408_without_waiting(
    tmp_path, budget: BufferBudget
) -> None:
    cfg = config(buffer_dir=str(tmp_path), client_rate_grace=0.0, min_client_rate=10**6)
    pace = Pace(cfg)
    pace.blamed = 1.0  # a second spent waiting on the client, for no bytes
    never = anyio.Event()
    with anyio.fail_after(5), pytest.raises(BodyRefused) as refused:
        await take_body(silent(never), chunk(b"x"), cfg, budget, pace)
    assert refused.value.status == 408


async def test_a_disconnect_is_none_and_frees_the_spool(tmp_path, budget: BufferBudget) -> None:
    cfg = config(buffer_dir=str(tmp_path))
    closed: list[Spool] = []
    real_close = Spool.close

    def close(spool: Spool) -> None:
        closed.append(spool)
        real_close(spool)

    receive = scripted(chunk(b"more"), {"type": "http.disconnect"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Spool, "close", close)
        assert await take_body(receive, chunk(b"some"), cfg, budget, Pace(cfg)) is None
    assert len(closed) == 1
    assert closed[0].size == 0
    assert budget.used == 0


async def test_no_room_to_buffer_is_503(tmp_path, budget: BufferBudget) -> None:
    cfg = config(buffer_dir=str(tmp_path / "missing"))
    budget = BufferBudget(0)  # everything goes to a file, which cannot be made
    with pytest.raises(BodyRefused) as refused:
        await take_body(scripted(), chunk(b"x" * 100, more=False), cfg, budget, Pace(cfg))
    assert refused.value.status == 503
    assert refused.value.reason == "no room to buffer"
    assert budget.on_disk == 0


async def test_cancelling_the_read_frees_the_spool(tmp_path) -> None:
    budget = BufferBudget(1024)
    cfg = config(buffer_dir=str(tmp_path))
    never = anyio.Event()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await take_body(silent(never), chunk(b"held"), cfg, budget, Pace(cfg))
    assert scope.cancelled_caught
    assert budget.used == 0


# -- first_message ----------------------------------------------------------------------


async def test_the_first_message_counts_towards_the_pace() -> None:
    cfg = config()
    pace = Pace(cfg)
    message = await first_message(scripted(chunk(b"abc")), pace)
    assert message["body"] == b"abc"
    assert pace.moved == 3


async def test_no_first_message_in_time_is_408() -> None:
    cfg = config(client_timeout=0.05, min_client_rate=0)
    never = anyio.Event()
    with anyio.fail_after(5), pytest.raises(BodyRefused, match="no body") as refused:
        await first_message(silent(never), Pace(cfg))
    assert refused.value.status == 408
