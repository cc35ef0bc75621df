"""Busy worker-seconds, integrated from lease starts and ends on a clock the test moves."""

from __future__ import annotations

import pytest

from wsgipool._pool.busy import BusyTime


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_busy_seconds_are_integrated_between_starts_and_ends() -> None:
    clock = Clock()
    busy = BusyTime(capacity=4, window=60, clock=clock)
    busy.start()
    clock.now += 0.25
    busy.start()
    clock.now += 0.5
    busy.stop()
    clock.now += 10
    assert busy.total() == pytest.approx(0.25 + 2 * 0.5 + 10)  # one lease still runs
    busy.stop()
    clock.now += 100
    assert busy.total() == pytest.approx(11.25)  # nothing runs: the total stays


def test_recent_utilization_is_busy_over_capacity_in_the_window() -> None:
    clock = Clock()
    busy = BusyTime(capacity=2, window=10, clock=clock)
    assert busy.recent() == 0.0
    busy.start()
    clock.now += 10
    assert busy.recent() == pytest.approx(0.5)  # one of two workers, all along
    busy.start()
    clock.now += 10
    assert busy.recent() == pytest.approx(1.0, abs=0.05)  # both, for the last window
    busy.stop()
    busy.stop()
    clock.now += 5
    assert busy.recent() == pytest.approx(0.5, abs=0.1)  # half the window idle
    clock.now += 30
    assert busy.recent() == 0.0  # the busy seconds left the window
    assert busy.total() == pytest.approx(30.0)


def test_a_long_lease_is_spread_over_the_window_and_never_above_one() -> None:
    clock = Clock()
    busy = BusyTime(capacity=1, window=60, clock=clock)
    busy.start()
    clock.now += 3600  # one request for an hour: only the window's buckets are kept
    assert busy.recent() == pytest.approx(1.0)
    assert len(busy.buckets) <= 62
    assert busy.total() == pytest.approx(3600)
    busy.stop()
    busy.stop()  # an extra end never makes the count negative
    assert busy.busy == 0
