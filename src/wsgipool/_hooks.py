"""Server hooks: functions of a Python file, named as gunicorn's, run at fixed points.

The front and each worker load the same file themselves (the worker from its path, so it
needs none of the front's code); each keeps the hooks that run in it. A hook that raises
is logged with its traceback and the server goes on, except ``post_worker_init``, whose
failure fails the worker's start (see the worker's main).
"""

from __future__ import annotations

import logging
import os
import runpy
from collections.abc import Callable, Mapping
from typing import Any

#: Hooks that run in the front, and what they are given (see docs/serving.md).
FRONT_HOOKS = ("on_starting", "when_ready", "on_reload", "on_exit", "child_exit",
               "nworkers_changed")  # fmt: skip
#: Hooks that run in each worker process.
WORKER_HOOKS = ("post_worker_init", "pre_request", "post_request", "worker_exit")
HOOK_NAMES = frozenset(FRONT_HOOKS + WORKER_HOOKS)
#: What each hook is given (gunicorn's ``post_request`` and ``worker_exit`` differ).
HOOK_ARGS = {
    "on_starting": "server", "when_ready": "server", "on_reload": "server",
    "on_exit": "server", "child_exit": "server, worker", "nworkers_changed": "server, new, old",
    "post_worker_init": "worker", "pre_request": "worker, environ",
    "post_request": "worker, environ, status", "worker_exit": "worker",
}  # fmt: skip

log = logging.getLogger("wsgipool.hooks")

Hooks = Mapping[str, Callable[..., Any]]


#: Files already run in this process, by absolute path: a config file that is also the
#: hooks file runs once in the front.
_RUN: dict[str, dict[str, Any]] = {}


def run_file(path: str) -> dict[str, Any]:
    """The module-level names of the Python file at ``path``, run once per process."""
    key = os.path.abspath(path)
    if key not in _RUN:
        _RUN[key] = runpy.run_path(key, run_name="__config__")
    return _RUN[key]


def load_hooks(path: str | None, names: tuple[str, ...]) -> dict[str, Callable[..., Any]]:
    """The functions among ``names`` that the file at ``path`` defines (none without one)."""
    if not path:
        return {}
    namespace = run_file(path)
    return {name: namespace[name] for name in names if callable(namespace.get(name))}


def run_hook(hooks: Hooks, name: str, *args: Any) -> None:
    """Call one hook if it is defined; its exception is logged, not raised."""
    hook = hooks.get(name)
    if hook is None:
        return
    try:
        hook(*args)
    except Exception:
        log.exception("the %s hook failed", name)
