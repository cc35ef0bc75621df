"""Busy worker-seconds: how much of the pool's capacity requests used, for autoscaling.

A CPU graph misleads for a pool of sync workers: a worker waiting on a slow database is
idle for the CPU yet unavailable to the next request. What an autoscaler needs is the
share of worker time taken by requests. It is integrated here from the leases' start
and end, not sampled: every start and end first adds ``busy * elapsed`` to the total, so
a request shorter than any scrape interval is counted in full.

The recent value is the same integral over the last :data:`WINDOW` seconds, kept in
one-second buckets (a lease that spans several seconds is spread over them exactly).
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable

#: Seconds over which :meth:`BusyTime.recent` averages.
WINDOW = 60


class BusyTime:
    """The integral of the number of leased workers over time."""

    def __init__(
        self, capacity: int, window: int = WINDOW, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity = capacity  # workers the pool may run at most
        self.window = window
        self.clock = clock
        self.busy = 0  # leases running now
        self.seconds = 0.0  # busy worker-seconds until ``self.since``
        self.born = self.since = clock()
        self.buckets: collections.deque[list[float]] = collections.deque()  # [second, busy]

    def start(self) -> None:
        self._advance(self.clock())
        self.busy += 1

    def stop(self) -> None:
        self._advance(self.clock())
        self.busy = max(0, self.busy - 1)

    def total(self) -> float:
        """Busy worker-seconds since the pool was made (a Prometheus counter)."""
        self._advance(self.clock())
        return self.seconds

    def recent(self) -> float:
        """Busy worker-seconds over capacity worker-seconds in the last ``window``
        seconds (fewer right after start): 0.0 idle, 1.0 every worker busy throughout."""
        now = self.clock()
        self._advance(now)
        start = max(math.floor(now) - self.window + 1, self.born)
        span = now - start
        if span <= 0:
            return self.busy / self.capacity
        used = sum(busy for second, busy in self.buckets if second >= math.floor(start))
        return min(1.0, used / (span * self.capacity))

    def _advance(self, now: float) -> None:
        """Account for the time since the last event, at the current number of leases."""
        t = self.since
        if self.busy and now > t:
            self.seconds += self.busy * (now - t)
            t = max(t, math.floor(now) - self.window - 1)  # older buckets are dropped anyway
            while t < now:
                second = math.floor(t)
                end = min(now, second + 1.0)
                self._add(second, self.busy * (end - t))
                t = end
        self.since = max(self.since, now)
        oldest = math.floor(now) - self.window
        while self.buckets and self.buckets[0][0] < oldest:
            self.buckets.popleft()

    def _add(self, second: int, busy: float) -> None:
        if self.buckets and self.buckets[-1][0] == second:
            self.buckets[-1][1] += busy
        else:
            self.buckets.append([second, busy])
