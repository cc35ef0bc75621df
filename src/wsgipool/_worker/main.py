"""The worker process: import the app once, then serve one request at a time.

Started by the pool as ``python -u -m wsgipool._worker FRONT_PID``. The channel is the
process's original stdin/stdout pipes; both are moved to private descriptors first, and
fd 1 is pointed at stderr, so nothing the app prints can corrupt a frame. In preload
mode this process is the template instead, and forks a worker for each the front asks for.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import traceback
from typing import Any

from .._errors import AppLoadError
from .._logging import after_app_import, configure_worker
from .._titles import set_title
from .._wire.appspec import app_traceback, label, load
from .._wire.frames import FAILED, READY, Hello, HelloFrame, fork_reply, pack, read_fork_request
from .channel import Channel
from .debug import Signals
from .hooks import WorkerHooks
from .serve import Worker


def _die_with_parent(front_pid: int) -> None:
    """Ask Linux to SIGKILL us when the front dies, however it dies: nothing else would
    ever stop an orphaned worker."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != front_pid:
        os._exit(1)


def main(argv: list[str] | None = None) -> None:
    """Set up the process before the app can touch it (descriptors, user, sys.path),
    then import the app and serve; a template forks the workers instead."""
    argv = sys.argv[1:] if argv is None else argv
    front_pid = int(argv[0])
    _die_with_parent(front_pid)
    rfd, wfd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # print() goes to stderr, never into the channel
    os.close(devnull)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the front decides when workers stop
    channel = Channel(rfd, wfd)
    hello = channel.next_frame()
    if not isinstance(hello, HelloFrame):
        raise SystemExit(f"wsgipool worker: expected HELLO, got {hello!r:.100}")
    options = hello.options
    if "uid" in options:  # drop privileges before any app code runs
        os.setgroups([])
        os.setgid(options["gid"])
        os.setuid(options["uid"])
        _die_with_parent(front_pid)  # Linux clears the death signal on a change of user
    sys.path[:] = options["sys_path"]
    level = options.get("log_level", "INFO")
    log_format = options.get("log_format", "text")
    configure_worker(level, log_format)
    set_title(f"wsgipool: worker {options['worker_id']} [{label(options['app'])}]")
    os.environ["WSGIPOOL_WORKER_LOADING"] = "1"
    try:
        app = load(options["app"])
    except AppLoadError as exc:
        channel.send(pack(FAILED, str(exc), app_traceback(exc)))
        raise SystemExit(3) from None
    del os.environ["WSGIPOOL_WORKER_LOADING"]
    after_app_import(level, log_format)  # a root handler only if the app's framework set up none
    worker_id = None if "fork_fd" in options else options["worker_id"]
    hooks = _start_hooks(channel, None, options, worker_id)
    if "fork_fd" in options:
        run_template(channel, app, options, hooks)
    _serve(channel, app, hooks)


def _start_hooks(
    channel: Channel, hooks: WorkerHooks | None, options: Hello, worker_id: int | None
) -> WorkerHooks:
    """Load the hooks file and, in a worker (not the template), run ``post_worker_init``;
    a failure of either is the worker's failure to start, sent as such."""
    try:
        if hooks is None:
            hooks = WorkerHooks(options.get("hooks"))
        if worker_id is not None:
            hooks.started(worker_id, label(options["app"]))
    except Exception as exc:
        where = "post_worker_init" if worker_id is not None else "loading the hooks"
        channel.send(pack(FAILED, f"{where} failed: {exc!r}", traceback.format_exc()))
        raise SystemExit(3) from None
    return hooks


def _serve(channel: Channel, app: Any, hooks: WorkerHooks) -> None:
    """Say READY (with the stack pipe the front may read, see debug.py) and serve until
    the front closes the pipe, then ``worker_exit``."""
    signals = Signals()
    signals.install()
    channel.signals = signals
    channel.send(pack(READY, os.getpid(), signals.read_fd))
    try:
        Worker(channel, app, signals, hooks).serve_forever()
    finally:
        hooks.run("worker_exit")


def run_template(channel: Channel, app: Any, options: Hello, hooks: WorkerHooks) -> None:
    """Preload mode: the app is imported; fork a worker for each request of the front."""
    sock = socket.socket(fileno=options["fork_fd"])
    signal.signal(signal.SIGCHLD, _reap_children)
    set_title(f"wsgipool: template [{label(options['app'])}]")
    channel.send(pack(READY, os.getpid(), -1))
    while True:
        message, fds, _, _ = socket.recv_fds(sock, 16, 2)
        if not message:
            raise SystemExit(0)  # the front is gone
        worker_id = read_fork_request(message)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                sock.close()
                for fd in (channel.rfd, channel.wfd):
                    os.close(fd)
                _serve_forked(app, fds[0], fds[1], worker_id, options, hooks)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        for fd in fds:
            os.close(fd)
        sock.send(fork_reply(worker_id, pid))


def _reap_children(signum: int, frame: object) -> None:
    """The template is the forked workers' parent: without this they stay zombies."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _serve_forked(
    app: Any, rfd: int, wfd: int, worker_id: int, options: Hello, hooks: WorkerHooks
) -> None:
    """In a fork of the template: become what a spawned worker is, on the pipes the
    front sent, with the app already imported."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()  # its own process group, as a spawned worker has
    _die_with_parent(os.getppid())
    set_title(f"wsgipool: worker {worker_id} [{label(options['app'])}]")
    channel = Channel(rfd, wfd)
    _start_hooks(channel, hooks, options, worker_id)
    _serve(channel, app, hooks)
