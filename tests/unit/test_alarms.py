"""Alarms on a real asyncio loop (and uvloop when installed): order, cancel, bounded heap.

Each test waits on an event the alarms set, under a bound, never for a fixed time.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from wsgipool._pool.alarms import SLACK, alarms_of

LOOPS = ["asyncio"] + (["uvloop"] if importlib.util.find_spec("uvloop") else [])


def run(loop_name: str, test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    if loop_name == "uvloop":
        import uvloop

        uvloop.run(asyncio.wait_for(test(), 10))
    else:
        asyncio.run(asyncio.wait_for(test(), 10))


@pytest.mark.parametrize("loop_name", LOOPS)
def test_alarms_fire_in_deadline_order_and_cancelled_ones_never(loop_name: str) -> None:
    async def test() -> None:
        alarms = alarms_of(asyncio.get_running_loop())
        fired: list[str] = []
        done = asyncio.Event()
        alarms.later(0.03, lambda: (fired.append("last"), done.set()))
        alarms.later(0.02, lambda: fired.append("second"))
        alarms.later(0.01, lambda: fired.append("first"))  # earlier than the armed timer
        cancelled = alarms.later(0.015, lambda: fired.append("cancelled"))
        cancelled.cancel()
        cancelled.cancel()  # twice: no harm
        await done.wait()
        assert fired == ["first", "second", "last"]
        assert len(alarms) == 0

    run(loop_name, test)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_cancelled_alarms_do_not_pile_up(loop_name: str) -> None:
    """Long deadlines cancelled at once (queue_timeout's) are dropped long before they
    are due: the heap stays within twice the live ones plus the slack."""

    async def test() -> None:
        alarms = alarms_of(asyncio.get_running_loop())
        live = [alarms.later(30, lambda: None) for _ in range(10)]
        for _ in range(10_000):
            alarms.later(30, lambda: None).cancel()
        assert len(alarms) <= 2 * (len(live) + SLACK) + 1
        for alarm in live:
            alarm.cancel()
        done = asyncio.Event()
        alarms.later(0.001, done.set)  # still armed and firing after all that
        await done.wait()

    run(loop_name, test)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_an_alarm_set_by_a_firing_one_and_one_that_raises(loop_name: str) -> None:
    async def test() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: None)
        alarms = alarms_of(loop)
        done = asyncio.Event()

        def boom() -> None:
            raise RuntimeError("boom")

        alarms.later(0.005, lambda: alarms.later(0.005, done.set))
        alarms.later(0.005, boom)
        await done.wait()  # the one armed from a callback fired despite the raise

    run(loop_name, test)
