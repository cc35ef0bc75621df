"""Deadlines on an asyncio loop that are almost always cancelled, without a timer each.

Every request sets two deadlines: how long its first read waits before the response is
streamed instead (``Relay``'s patience) and, when it queues, ``queue_timeout``. Nearly
always the response or a worker comes first and the deadline is cancelled. uvloop makes,
starts, stops and frees a libuv timer handle for each ``call_later`` and its cancel,
which costs more than a request's frame decoding; here a deadline is an entry in a heap,
cancelled by clearing its callback, and only the earliest live one holds a loop timer.
Cancelled entries are dropped as they reach the top, or all at once when they outnumber
the live ones.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import weakref
from collections.abc import Callable

#: Cancelled entries tolerated in the heap before it is rebuilt without them.
SLACK = 64


class Alarm:
    """One deadline; :meth:`cancel` is cheap, safe to repeat, and a no-op once fired."""

    __slots__ = ("callback", "owner", "when")

    def __init__(self, owner: Alarms, when: float, callback: Callable[[], object]) -> None:
        self.owner = owner
        self.when = when
        self.callback: Callable[[], object] | None = callback

    def cancel(self) -> None:
        if self.callback is not None:
            self.callback = None
            self.owner.cancelled()


class Alarms:
    """The deadlines of one loop, earliest first, behind one ``call_at`` timer."""

    __slots__ = ("_armed_at", "_count", "_dead", "_heap", "_loop", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # the loop's entry in _by_loop must not keep it alive
        self._heap: list[tuple[float, int, Alarm]] = []
        self._count = itertools.count()  # ties keep their order; alarms are never compared
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")
        self._dead = 0

    def __len__(self) -> int:
        """Entries held, cancelled ones included (bounded: see :data:`SLACK`)."""
        return len(self._heap)

    def later(self, delay: float, callback: Callable[[], object]) -> Alarm:
        """Call ``callback`` from the loop ``delay`` seconds from now, unless cancelled."""
        loop = self._loop()
        assert loop is not None  # only called from the running loop
        when = loop.time() + delay
        alarm = Alarm(self, when, callback)
        heapq.heappush(self._heap, (when, next(self._count), alarm))
        if when < self._armed_at:
            self._arm(when)
        return alarm

    def cancelled(self) -> None:
        self._dead += 1
        if self._dead > SLACK and self._dead * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if entry[2].callback is not None]
            heapq.heapify(self._heap)
            self._dead = 0

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = self._loop()
        if loop is not None:
            self._armed_at = when
            self._timer = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer, self._armed_at = None, float("inf")
        loop = self._loop()
        if loop is None:
            return
        heap, now = self._heap, loop.time()
        try:
            while heap and (heap[0][0] <= now or heap[0][2].callback is None):
                alarm = heapq.heappop(heap)[2]
                callback, alarm.callback = alarm.callback, None
                if callback is None:
                    self._dead -= 1
                else:
                    callback()
        finally:  # a callback that raised leaves the others armed
            if heap and heap[0][0] < self._armed_at:
                self._arm(heap[0][0])


def alarms_of(loop: asyncio.AbstractEventLoop) -> Alarms:
    """The loop's alarms, made on first use; they go with the loop."""
    global _last
    last = _last
    if last is not None and last[0]() is loop:
        return last[1]
    alarms = _by_loop.get(loop)
    if alarms is None:
        alarms = _by_loop[loop] = Alarms(loop)
    _last = (weakref.ref(loop), alarms)
    return alarms


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Alarms]
_by_loop = weakref.WeakKeyDictionary()
_last: tuple[weakref.ref[asyncio.AbstractEventLoop], Alarms] | None = None
