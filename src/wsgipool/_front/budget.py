"""The front-wide budget of body bytes held for slow peers: in memory, and on disk.

One object for the whole front, shared by every request and response spool: memory past
its bound goes to disk, and disk past its bound is paid for by the response furthest
behind. Its own module because the policy (who pays) is not the spool's business.
"""

from __future__ import annotations

import os
import tempfile
from typing import Protocol

#: Share of the buffer directory's free space (at start) that spool files may take at most.
DISK_SHARE = 0.5


class Holder(Protocol):
    """A response that holds bytes for its client, and may be cut to free them."""

    def drain_time(self) -> float:
        """Seconds its client would take to read what is held, at its pace so far."""
        ...

    def shed(self) -> None:
        """Cut the client off now, freeing what is held (and leave the budget's holders)."""
        ...


class BufferBudget:
    """Bytes of bodies the whole front may hold in memory at once, and on disk.

    Memory past ``limit`` goes to disk. Disk past ``disk_limit`` (None: no bound) is paid
    for by a response: the one whose client would take longest to read what is held for it
    at the pace it has read so far (it read least and holds most) is cut off, whether it is
    the one asking or another; a request body asking is refused when no response can pay.
    A client that keeps up holds little and reads fast, so it is the last to pay; a worker
    never waits for room."""

    __slots__ = ("disk_limit", "holders", "limit", "on_disk", "reserved", "used")

    def __init__(self, limit: int, disk_limit: int | None = None) -> None:
        self.limit = limit
        self.disk_limit = disk_limit
        self.used = 0  # in memory
        self.on_disk = 0  # in spool files, the workers' spills included
        self.reserved = 0  # promised to workers writing spill files, not written yet
        self.holders: dict[Holder, None] = {}  # responses that may be cut, oldest first

    def room_on_disk(self, size: int, asking: Holder | None = None) -> bool:
        """Is there room for ``size`` more bytes on disk? Cuts responses to make it; False
        if the one to pay is ``asking`` (or none can: a request body asking)."""
        limit = self.disk_limit
        while limit is not None and self.on_disk + self.reserved + size > limit:
            victim = max(self.holders, key=_drain_time, default=None)
            if victim is None or victim is asking or victim.drain_time() <= 0:
                return False
            if asking is not None and victim.drain_time() <= asking.drain_time():
                return False  # the asker is as far behind as any: it pays itself
            victim.shed()
            self.holders.pop(victim, None)  # freed, even if shed() did not say so
        return True

    def disk_room(self) -> int | None:
        """Bytes left on disk within the budget (None: no bound)."""
        if self.disk_limit is None:
            return None
        return max(0, self.disk_limit - self.on_disk - self.reserved)

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


def _drain_time(holder: Holder) -> float:
    return holder.drain_time()


def disk_budget(configured: int | None, directory: str | None) -> int | None:
    """``configured``, or less when the buffer directory's filesystem has less free space
    than it takes (at most :data:`DISK_SHARE` of it): the budget must fit the disk."""
    if configured is None:
        return None
    try:
        stat = os.statvfs(directory or tempfile.gettempdir())
    except OSError:
        return configured
    return min(configured, int(stat.f_bavail * stat.f_frsize * DISK_SHARE))
