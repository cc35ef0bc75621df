"""The pool's record of its workers, and the one place a worker's state changes.

:meth:`Registry.set_state` moves a worker from one :class:`~wsgipool._pool.slot.State`
to another and does what each move implies: it keeps the idle list and the busy count
(asked on every dispatch, so never recomputed by a scan), closes the pipes of a worker
that leaves and kills it after its grace, counts the restart under its reason, and wakes
a waiting request, since capacity changed. Nothing else writes a slot's state.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Protocol

from .process import WorkerProcess
from .slot import LIVE, Slot, State


class Wakes(Protocol):
    """What the registry tells the wait queue: capacity changed, one may retry."""

    def wake_one(self) -> None: ...


class Registry:
    """Every worker not yet reaped, with its slot; the idle ones in the order used."""

    def __init__(
        self, waiters: Wakes, free_id: Callable[[int], None], processes: set[WorkerProcess]
    ) -> None:
        self.workers: dict[WorkerProcess, Slot] = {}
        self.idle: list[WorkerProcess] = []  # IDLE workers, most recently used last
        self.busy = 0  # workers in BUSY
        self.exiting = 0  # workers in EXITING: the pool's reap() has work
        self.restarts: dict[str, int] = {}
        self.processes = processes  # workers and templates: the finalizer's
        self._waiters = waiters
        self._free_id = free_id  # tells the launcher a worker's id is free again

    def set_state(
        self, worker: WorkerProcess, state: State, reason: str = "", grace: float = 0.0
    ) -> None:
        """Move ``worker`` to ``state``; the only place a worker's state changes.

        Leaving for EXITING closes its pipes (it exits at EOF), kills it after ``grace``
        seconds (at once if 0), frees its id, counts the restart under ``reason`` if one
        is given, and lets a waiting request retry, since capacity changed.
        """
        slot, now = self.slot(worker), time.monotonic()
        old = slot.state
        if old is state or old is State.GONE or (old is State.EXITING and state is not State.GONE):
            return  # no way back: a worker stopped at shutdown is not "crashed" after
        if old is State.IDLE:
            idle = self.idle
            if idle[-1] is worker:  # the usual case: the most recently used one
                idle.pop()
            else:
                idle.remove(worker)
        elif old is State.EXITING:
            self.exiting -= 1
        elif old is State.BUSY:
            self.busy -= 1
        slot.state, slot.since = state, now
        if state is not State.BUSY and state is not State.RETIRING:
            slot.lease = None
        if reason:
            slot.reason = reason
        if state is State.IDLE:
            self.idle.append(worker)
        elif state is State.BUSY:
            self.busy += 1
        elif state is State.RETIRING:
            self._waiters.wake_one()  # its replacement may start now
        elif state is State.EXITING:
            self._leave(worker, slot, reason, grace, now)
        elif state is State.GONE:
            self.workers.pop(worker, None)
            self.processes.discard(worker)

    def _leave(
        self, worker: WorkerProcess, slot: Slot, reason: str, grace: float, now: float
    ) -> None:
        self.exiting += 1
        if reason:
            self.restarts[reason] = self.restarts.get(reason, 0) + 1
        if grace <= 0 and worker.alive():
            worker.signal_group(signal.SIGKILL)
        worker.close_pipes()
        slot.kill_at = now + grace
        self._free_id(worker.id)
        self._waiters.wake_one()

    def slot(self, process: WorkerProcess) -> Slot:
        """The record of ``process`` (a retired template gets one when it leaves)."""
        slot = self.workers.get(process)
        if slot is None:
            slot = self.workers[process] = Slot(since=time.monotonic())
        return slot

    def count(self, *states: State) -> int:
        return sum(1 for slot in self.workers.values() if slot.state in states)

    @property
    def up(self) -> int:
        """Workers that can serve or are serving."""
        return self.count(*LIVE)
