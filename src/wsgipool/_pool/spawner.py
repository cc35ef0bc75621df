"""Starting worker processes: their pipes, their environment, the thread that forks.

``subprocess.Popen`` blocks for the milliseconds ``fork``/``exec`` take, so it runs in one
thread of its own (:data:`SPAWNER`) while the event loop goes on serving.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from .._errors import ConfigError

#: A worker pipe's capacity: fewer wake-ups for big bodies.
PIPE_SIZE = 1024 * 1024
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_T = TypeVar("_T")


def _worker_env(env: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ if env is None else env)
    # `-m wsgipool._worker` must import this very copy of wsgipool.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
    return env


def pipe() -> tuple[int, int]:
    r, w = os.pipe()
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)  # fewer wake-ups for big bodies
    return r, w


def channel_pipes() -> tuple[int, int, int, int]:
    """A worker's two pipes, both or neither: ``(to_child_r, to_child_w, from_child_r,
    from_child_w)``."""
    to_child_r, to_child_w = pipe()
    try:
        from_child_r, from_child_w = pipe()
    except BaseException:
        os.close(to_child_r)
        os.close(to_child_w)
        raise
    return to_child_r, to_child_w, from_child_r, from_child_w


class _Spawner:
    """The one thread that starts worker processes (see ``WorkerProcess.spawn``).

    A daemon thread of its own rather than an executor's: an executor's threads are
    joined, and so end, when the main thread finishes, which would kill every worker
    (their parent thread died) while the loop still serves in another thread.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[..., _T], *args: Any) -> Future[_T]:
        future: Future[_T] = Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="wsgipool-spawn", daemon=True
                )
                self._thread.start()
        self._jobs.put((future, functools.partial(job, *args)))
        return future

    def _run(self) -> None:
        while True:
            future, job = self._jobs.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(job())
                except BaseException as exc:
                    future.set_exception(exc)


SPAWNER = _Spawner()


def start_process(
    env: dict[str, str] | None, pass_fds: tuple[int, ...]
) -> tuple[subprocess.Popen[bytes], int, int]:
    """A new ``python -m wsgipool._worker`` and the front's ends of its two pipes."""
    to_child_r, to_child_w, from_child_r, from_child_w = channel_pipes()
    try:
        popen = subprocess.Popen(
            [sys.executable, "-u", "-m", "wsgipool._worker", str(os.getpid())],
            stdin=to_child_r,
            stdout=from_child_w,
            close_fds=True,
            pass_fds=pass_fds,
            start_new_session=True,  # its own process group: kill it whole
            env=_worker_env(env),
        )
    except BaseException:
        for fd in (to_child_w, from_child_r):
            os.close(fd)
        raise
    finally:
        os.close(to_child_r)
        os.close(from_child_w)
    return popen, from_child_r, to_child_w


def resolve_identity(user: str | None, group: str | None) -> tuple[int, int] | None:
    """``(uid, gid)`` for the workers to switch to, or None to keep the front's."""
    if user is None and group is None:
        return None
    import grp
    import pwd

    try:
        entry = pwd.getpwnam(user) if user is not None else pwd.getpwuid(os.geteuid())
        gid = grp.getgrnam(group).gr_gid if group is not None else entry.pw_gid
    except KeyError as exc:
        raise ConfigError(f"unknown user or group: {exc.args[0]}") from exc
    if os.geteuid() != 0 and (entry.pw_uid, gid) != (os.geteuid(), os.getegid()):
        raise ConfigError("user/group need the front to start as root")
    return entry.pw_uid, gid
