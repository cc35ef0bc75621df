"""The pool's record of one worker: its state, and what it is due for.

A worker's state changes only in ``Registry.set_state`` (see registry.py); the process handle
(:class:`~wsgipool._pool.process.WorkerProcess`) keeps only process facts, and a request's
own state (deadline, kill) is its lease's.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .lease import Lease


class State(enum.Enum):
    """Where a worker is in its life; only ``Registry.set_state`` (see registry.py) changes it."""

    STARTING = "starting"  # spawned, not READY yet
    IDLE = "idle"
    BUSY = "busy"  # leased to one request
    RETIRING = "retiring"  # leased, and leaves once that request ends
    EXITING = "exiting"  # pipes closed; reaped (or killed past its grace) by the pool
    GONE = "gone"  # reaped


LIVE = (State.IDLE, State.BUSY, State.RETIRING)


@dataclass(eq=False)
class Slot:
    """The pool's record of one worker: where it is in its life and when it is due to go.
    (The process handle keeps only process facts; a request's own state is its lease's.)"""

    since: float  # when it entered its state
    state: State = State.STARTING
    reason: str = ""  # why it is retiring or exiting
    requests: int = 0
    request_limit: int = 0  # retire after this many requests (0: never)
    expires_at: float = 0.0  # retire once time.monotonic() passes this (0: never)
    kill_at: float = 0.0  # EXITING: SIGKILL if it has not exited by then
    lease: Lease | None = None  # BUSY or RETIRING: the request it serves
