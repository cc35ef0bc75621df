"""What the pool looks like from outside: the snapshot probes, metrics and tests read."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


def rss_of(pid: int) -> int | None:
    """Resident memory of ``pid`` in bytes (Linux ``/proc``; None elsewhere or if gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class WorkerInfo:
    """One worker as ``Pool.stats`` saw it."""

    id: int
    pid: int
    state: str  # "idle", "busy" or "retiring"
    requests: int
    started_at: float  # time.monotonic()
    request: str = ""  # busy: "GET /path?query" of the request it serves
    client: str = ""  # busy: the client's address
    busy_since: float = 0.0  # busy: time.monotonic() when it took the request


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of the pool: what the probes, metrics and status page show."""

    workers: tuple[WorkerInfo, ...]  # live workers, by id
    target: int
    starting: int
    waiting: int
    closing: bool
    failures: int  # start-up failures in a row
    backoff_until: float  # time.monotonic() before which no start-up is attempted
    last_error: str | None
    restarts: Mapping[str, int]  # workers replaced, by reason
    template_pid: int | None
    #: Counted events, by (kind, label): ("stacks", "timeout"), ("interrupts", "stopped") ...
    events: Mapping[tuple[str, str], int] = field(default_factory=dict)

    @property
    def idle(self) -> tuple[WorkerInfo, ...]:
        return tuple(w for w in self.workers if w.state == "idle")

    @property
    def busy(self) -> tuple[WorkerInfo, ...]:
        """Workers serving a request (retiring ones included)."""
        return tuple(w for w in self.workers if w.state != "idle")
