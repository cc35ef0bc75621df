"""The front's server hooks (``on_starting`` ... ``nworkers_changed``) and what they get.

gunicorn hands its hooks the arbiter; ours get a :class:`Server`, a small read-only view
of the pool (the app's label, the options, the front's pid, a stats snapshot), and for
``child_exit`` an :class:`ExitedWorker`. They run in the front's event loop thread, so a
hook should be quick: a slow one delays supervision.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol

from .._config import Config
from .._errors import ConfigError
from .._hooks import FRONT_HOOKS, load_hooks, run_hook
from .._wire.appspec import AppSpec, label
from .deaths import EXIT_UNKNOWN, Death
from .stats import PoolStats


class Watched(Protocol):
    """What the hooks read of the pool."""

    def stats(self) -> PoolStats: ...


@dataclass(frozen=True)
class ExitedWorker:
    """A worker process that has exited (``child_exit``): its number, pid and how."""

    id: int
    pid: int
    exitcode: int | None  # negative: killed by that signal; None: known to the template only
    status: str  # "exit code 0", "killed by SIGKILL", ...


class Server:
    """What a front hook is given: the app, the options, and the pool as it is now."""

    def __init__(self, pool: Watched, spec: AppSpec, config: Config) -> None:
        self._pool = pool
        self.app = label(spec)
        self.config = config
        self.pid = os.getpid()

    def stats(self) -> PoolStats:
        """The pool's workers, their states and the queue, now."""
        return self._pool.stats()

    def __repr__(self) -> str:
        return f"<wsgipool server {self.app} pid {self.pid}>"


class FrontHooks:
    """The hooks of the ``hooks`` file that run in the front, each called safely."""

    def __init__(self, pool: Watched, spec: AppSpec, config: Config) -> None:
        try:
            self.hooks = load_hooks(config.hooks, FRONT_HOOKS)
        except Exception as exc:
            raise ConfigError(f"{config.hooks}: {type(exc).__name__}: {exc}") from exc
        self.server = Server(pool, spec, config)
        self.workers = 0  # as last told to nworkers_changed

    def run(self, name: str, *args: Any) -> None:
        if self.hooks:
            run_hook(self.hooks, name, self.server, *args)

    def child_exit(self, worker_id: int, pid: int, death: Death) -> None:
        if worker_id and "child_exit" in self.hooks:  # 0: the preload template
            code = None if death.code == EXIT_UNKNOWN else death.code
            exited = ExitedWorker(worker_id, pid, code, str(death))
            self.run("child_exit", exited)

    def count(self, up: int) -> None:
        """``nworkers_changed(server, new, old)`` when the number of workers up changed."""
        if up != self.workers:
            old, self.workers = self.workers, up
            self.run("nworkers_changed", up, old)
