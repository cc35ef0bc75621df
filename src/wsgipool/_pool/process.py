"""The front's handle on one worker process: spawn, framed pipe I/O, kill, reap.

The pipes are plain non-blocking descriptors driven by ``anyio.wait_readable`` /
``wait_writable``, so a handle is tied to no event loop: the same pool serves asyncio
and trio, and survives the loop it was started on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Protocol, TypeVar

import anyio

from .._errors import (
    AppLoadError,
    ProtocolError,
    RequestNotSentError,
    WorkerGoneError,
    WorkerStartError,
)
from .._wire import frames as proto
from .deaths import EXIT_UNKNOWN, Death, describe_exit, oom_kills
from .readers import open_reader
from .spawner import SPAWNER, start_process

log = logging.getLogger("wsgipool.pool")

#: Most pieces given to one ``writev``: Linux refuses more than IOV_MAX (1024) with EINVAL.
WRITEV_MAX = 512
#: Longest a half-written frame may wait for the worker to read before it is given up.
WRITE_STUCK = 60.0
#: Set in a worker's environment while it imports the app (see ``spawn``).
LOADING_ENV = "WSGIPOOL_WORKER_LOADING"


class Child(Protocol):
    """What the pool needs of a process handle (``subprocess.Popen`` has it)."""

    pid: int

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class ForkedChild:
    """Stands in for ``Popen`` for a worker forked by the preload template."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not _running(self.pid):
            self.returncode = EXIT_UNKNOWN
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while (code := self.poll()) is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            time.sleep(0.005)
        return code


def _running(pid: int) -> bool:
    """Is ``pid`` alive (a zombie waiting for its parent to reap it counts as gone)?"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


#: The kernel's PF_EXITING flag of a task (the ninth field of /proc/<pid>/stat).
_PF_EXITING = 0x4


def _exiting(pid: int) -> bool:
    """Is ``pid`` on its way out already (its pipe closed before its parent can reap it)?"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] in (b"Z", b"X") or bool(int(fields[6]) & _PF_EXITING)


_W = TypeVar("_W", bound="WorkerProcess")
#: Signals that mean "killed from outside", not "the app failed to start".
_KILLED = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT})
#: Seconds between SIGTERM and SIGKILL whenever a worker is made to stop.
KILL_GRACE = 2.0


class WorkerProcess:
    """One worker process and its two pipes: the facts about it, and how to stop it.

    Reads and writes are made by one task at a time: the holder of its lease.
    """

    def __init__(self, worker_id: int, popen: Child, rfd: int, wfd: int) -> None:
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        self.id = worker_id
        self.popen = popen
        self.pid = popen.pid
        self.rfd, self.wfd = rfd, wfd
        #: The preload template it was forked from (compared by identity only).
        self.template: WorkerProcess | None = None
        self.reader = open_reader(rfd, f"worker {worker_id}")
        self.started_at = time.monotonic()
        self.stacks = -1  # the worker's descriptor of its stack pipe, once READY said it
        self.stack_pipe = -1  # the front's end of it, opened on first use (see stacks.py)
        self.dumping = False  # a dump of its stacks is being read
        self.oom_before = oom_kills()  # the cgroup's OOM kills so far (see deaths.py)
        self.sent_sigkill = False  # wsgipool SIGKILLed it while it ran
        self._death: Death | None = None

    def __repr__(self) -> str:
        return f"<worker {self.id} pid {self.pid}>"

    @classmethod
    async def spawn(
        cls: type[_W],
        worker_id: int,
        hello: proto.Hello,
        env: dict[str, str] | None,
        pass_fds: tuple[int, ...] = (),
    ) -> _W:
        """Start the process and send HELLO; wait for READY with :meth:`ready`.

        ``fork`` and ``exec`` run in another thread: ``Popen`` waits until the child has
        started the new program, milliseconds in which the event loop would serve nobody.
        That thread is waited for even when the caller is cancelled, so no process is
        lost, and it is always the same one, which lives as long as the front: a worker
        asks to be killed when its parent dies (``PR_SET_PDEATHSIG``), and Linux takes
        the *thread* that forked it for its parent.
        """
        if os.environ.get(LOADING_ENV):
            raise RuntimeError(
                "a wsgipool worker tried to start workers of its own while importing the app: "
                "the main script runs again in each worker, so guard the code that serves "
                "with `if __name__ == '__main__':`"
            )
        started = SPAWNER.submit(start_process, env, pass_fds)
        with anyio.CancelScope(shield=True):  # once asked for, the process is ours to keep
            popen, rfd, wfd = await anyio.to_thread.run_sync(started.result)
        worker = cls(worker_id, popen, rfd, wfd)  # here: its reader belongs to this loop
        try:
            os.write(wfd, proto.hello_frame(hello))  # small: fits the empty pipe
        except BaseException:
            worker.kill_now()
            raise
        return worker

    async def ready(self, timeout: float) -> None:
        """Wait for READY. The app's own failure (or an import slower than ``timeout``) is
        AppLoadError; a worker killed from outside meanwhile is WorkerStartError."""
        try:
            frames = await self.reader.read(timeout)
        except WorkerGoneError:
            code = await self.wait(1.0)
            message = f"worker {self.id} exited during start-up ({describe_exit(code)})"
            if code is not None and -code in _KILLED:
                raise WorkerStartError(message) from None
            raise AppLoadError(message) from None
        except ProtocolError as exc:
            raise WorkerStartError(f"worker {self.id}: {exc}") from None
        if frames is None:
            raise AppLoadError(f"the app took longer than {timeout:g}s to import (startup_timeout)")
        first = frames[0]
        if isinstance(first, proto.Failed):
            raise AppLoadError(first.message, first.traceback)
        if not isinstance(first, proto.Ready):
            raise WorkerStartError(f"expected READY from worker {self.id}, got {first!r:.100}")
        self.stacks = first.stacks

    async def write(self, *pieces: bytes | bytearray | memoryview) -> None:
        """Write whole frames given as pieces (gathered, never joined): cancellable until
        the first byte is in the pipe, then shielded.

        A frame cut in half would corrupt the stream for every later request, while a frame
        not started at all is harmless; an idle worker drains its pipe, so the shielded part
        ends quickly unless the worker is stuck, which ``WRITE_STUCK`` bounds. A worker gone
        before the first byte is :class:`RequestNotSentError`.
        """
        written = self._write_some(pieces, RequestNotSentError)
        while written is None:
            await self._wait_writable(RequestNotSentError)  # nothing written: safe to cancel
            written = self._write_some(pieces, RequestNotSentError)
        rest = _after(pieces, written)
        if rest:
            with anyio.CancelScope(shield=True), anyio.move_on_after(WRITE_STUCK) as scope:
                while rest:
                    written = self._write_some(rest, WorkerGoneError)
                    if written is None:
                        await self._wait_writable(WorkerGoneError)
                    else:
                        rest = _after(rest, written)
            if scope.cancelled_caught:
                raise WorkerGoneError(f"worker {self.id} stopped reading its pipe")

    def try_write(self, *pieces: bytes | bytearray | memoryview) -> bool:
        """Write small frames whole, now, or not at all: a pipe write of at most
        ``PIPE_BUF`` bytes is atomic, so it is never cut in half."""
        size = sum(map(len, pieces))
        if size > select.PIPE_BUF:
            raise ValueError(f"{size} bytes is too much for an atomic write")
        try:
            return self._write_some(pieces, WorkerGoneError) is not None
        except WorkerGoneError:
            return False  # the reads will say the worker is gone

    async def _wait_writable(self, error: type[WorkerGoneError]) -> None:
        try:
            await anyio.wait_writable(self.wfd)
        except (anyio.ClosedResourceError, OSError, ValueError) as exc:
            raise error(f"worker {self.id}: pipe closed") from exc

    def _write_some(
        self, pieces: Sequence[bytes | bytearray | memoryview], error: type[WorkerGoneError]
    ) -> int | None:
        try:
            if len(pieces) == 1:
                return os.write(self.wfd, pieces[0])
            return os.writev(self.wfd, pieces[:WRITEV_MAX])  # the rest on the next call
        except BlockingIOError:
            return None
        except OSError as exc:  # EPIPE: the worker is gone
            raise error(f"worker {self.id}: {exc}") from exc

    def alive(self) -> bool:
        return self.popen.poll() is None

    def exit_status(self) -> str:
        """How the process ended, for a log line (``"killed by SIGKILL"``, and whether
        the OOM killer did it)."""
        death = self.death()
        return describe_exit(None) if death is None else str(death)

    def death(self) -> Death | None:
        """How the process ended, learnt once it has (None while it runs)."""
        if self._death is None:
            code = self.popen.poll()
            if code is not None:
                after = oom_kills() if code == -signal.SIGKILL else None
                self._death = Death(code, self.oom_before, after, self.sent_sigkill)
        return self._death

    def signal_group(self, sig: int) -> None:
        """Signal the worker and every process it started (its own process group)."""
        if sig == signal.SIGKILL and not self.sent_sigkill and self.popen.poll() is None:
            self.sent_sigkill = not _exiting(self.pid)  # else it was dying already
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, sig)

    def signal(self, sig: int) -> bool:
        """Signal the worker process alone (not its group); False if it is gone."""
        try:
            os.kill(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def close_pipes(self) -> None:
        """Close both pipes; a request still reading or writing them sees WorkerGoneError."""
        self.reader.abort(WorkerGoneError(f"worker {self.id} was stopped"))
        for fd in (self.rfd, self.wfd):
            if fd < 0:
                continue
            with contextlib.suppress(Exception):  # no event loop here: nobody is waiting
                anyio.notify_closing(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        self.rfd = self.wfd = -1
        self.stacks = -1  # no dump of its stacks from now on (see stacks.py)
        if self.stack_pipe >= 0:
            with contextlib.suppress(OSError):
                os.close(self.stack_pipe)
            self.stack_pipe = -1

    async def wait(self, timeout: float) -> int | None:
        """Reap the process within ``timeout`` seconds; None if it is still running."""
        deadline = time.monotonic() + timeout
        delay = 0.001
        while (code := self.popen.poll()) is None and time.monotonic() < deadline:
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return code

    async def terminate(self, grace: float = KILL_GRACE) -> int | None:
        """SIGTERM the group, SIGKILL it if the worker has not exited ``grace`` s later.

        With ``grace=0`` it is SIGKILL at once. Either way the group gets a final SIGKILL,
        for whatever the app left running in it.
        """
        code = self.popen.poll()
        if code is None and grace > 0:
            self.signal_group(signal.SIGTERM)
            code = await self.wait(grace)
        if code is None:
            self.signal_group(signal.SIGKILL)
            code = await self.wait(5.0)
        self.signal_group(signal.SIGKILL)
        return code

    async def stop(self, grace: float) -> int | None:
        """Close the pipes (the worker exits at EOF); past ``grace``, :meth:`terminate`."""
        self.close_pipes()
        code = await self.wait(grace)
        return code if code is not None else await self.terminate()

    def kill_now(self) -> None:
        """Synchronous last resort (finalizers, atexit): no waiting, no event loop."""
        self.signal_group(signal.SIGKILL)
        self.close_pipes()
        with contextlib.suppress(Exception):
            self.popen.wait(0.5)


def _after(
    pieces: Sequence[bytes | bytearray | memoryview], written: int
) -> list[bytes | bytearray | memoryview]:
    """What is left of ``pieces`` once ``written`` bytes of them are in the pipe."""
    rest: list[bytes | bytearray | memoryview] = []
    for piece in pieces:
        if written >= len(piece):
            written -= len(piece)
        else:
            rest.append(memoryview(piece)[written:] if written else piece)
            written = 0
    return rest
