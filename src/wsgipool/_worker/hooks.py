"""The server hooks that run in a worker process, and the object they are given.

The worker loads the ``hooks`` file itself, by its path (after the app is imported, so
the file may import the app's modules), and never the front's code. ``post_worker_init``
runs once the worker is set up; with preload it runs in each forked worker, the place to
close connections inherited from the template. Its failure fails the worker's start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .._hooks import WORKER_HOOKS, load_hooks, run_hook


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker hook is given: the worker's number, its pid and the app's label."""

    id: int
    pid: int
    app: str


class WorkerHooks:
    """The worker's hooks (none without a ``hooks`` file), bound to this process."""

    def __init__(self, path: str | None) -> None:
        """Raises whatever running the file raises: the worker then fails to start."""
        self.hooks = load_hooks(path, WORKER_HOOKS)
        self.worker: WorkerInfo | None = None

    def started(self, worker_id: int, app: str) -> None:
        """``post_worker_init(worker)``; raises the hook's exception (a failed start)."""
        self.worker = WorkerInfo(worker_id, os.getpid(), app)
        hook = self.hooks.get("post_worker_init")
        if hook is not None:
            hook(self.worker)

    def run(self, name: str, *args: Any) -> None:
        if self.hooks:
            run_hook(self.hooks, name, self.worker, *args)
