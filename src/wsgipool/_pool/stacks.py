"""A busy worker's stacks, read by the front: for a timeout, a slow request, on demand.

The worker writes them into its stack pipe when signalled (see ``wsgipool._worker.debug``);
the front opens that pipe through ``/proc/<pid>/fd/<n>`` the first time it needs it. A
dump ends with :data:`END_MARK`, written once the worker's main thread runs Python
again; a main thread stuck in C that holds the GIL never writes it, so the read also
ends once the pipe has been quiet for a moment after the dump, or after ``STACKS_WAIT``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from typing import Protocol

import anyio

from .._wire.kinds import END_MARK, STACKS_SIGNAL

#: Longest the front waits for a dump.
STACKS_WAIT = 1.0
#: A dump with no end mark is taken as whole once the pipe was quiet this long.
QUIET = 0.2
_POLL = 0.005
_BLOCK = 1024 * 1024
#: Most bytes of one dump read (the worker's pipe holds at most this much anyway).
_MOST = 1024 * 1024


class Dumpable(Protocol):
    """What reading the stacks needs of a worker's handle (``WorkerProcess`` has it)."""

    id: int
    pid: int
    stacks: int
    stack_pipe: int
    dumping: bool

    def signal(self, sig: int) -> bool: ...


def _open(worker: Dumpable) -> int:
    """The worker's stack pipe, opened once; OSError if its descriptor is no pipe now (the
    app may close it and get the number back for a file, or ``/dev/zero``, which the
    front would otherwise read without end)."""
    if worker.stack_pipe < 0:
        path = f"/proc/{worker.pid}/fd/{worker.stacks}"
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(f"worker {worker.id}: its stack pipe is gone")
        worker.stack_pipe = fd
    return worker.stack_pipe


def _read_all(fd: int, most: int = _MOST) -> bytes:
    """Whatever the pipe holds now, up to ``most`` bytes (b"" if nothing)."""
    data = b""
    with contextlib.suppress(BlockingIOError):
        while len(data) < most and (chunk := os.read(fd, min(_BLOCK, most - len(data)))):
            data += chunk
    return data


async def read_stacks(worker: Dumpable, wait: float = STACKS_WAIT) -> str | None:
    """Every thread's Python stack in ``worker`` now, as faulthandler writes them (most
    recent call first); None if the worker cannot say (gone, or never opened the pipe)."""
    if worker.stacks < 0:
        return None
    while worker.dumping:  # one dump at a time: two would mix in the pipe
        await anyio.sleep(_POLL)
    worker.dumping = True
    fd = -1
    try:
        # A descriptor of our own: the worker's may be closed (and its number reused)
        # while this waits, if the worker is stopped meanwhile.
        fd = os.dup(_open(worker))
        _read_all(fd)  # the rest of an earlier dump cut short
        if not worker.signal(STACKS_SIGNAL):
            return None
        return await _collect(fd, wait)
    except OSError:
        return None
    finally:
        worker.dumping = False
        if fd >= 0:
            os.close(fd)


async def _collect(fd: int, wait: float) -> str | None:
    buf = b""
    now = time.monotonic()
    deadline, last = now + wait, now
    while True:
        chunk = _read_all(fd, _MOST - len(buf))
        now = time.monotonic()
        if len(buf) + len(chunk) >= _MOST:  # more than a dump: whatever it is, enough
            return (buf + chunk).decode("utf-8", "replace").rstrip() or None
        if chunk:
            buf, last = buf + chunk, now
            text, mark, rest = buf.partition(END_MARK)
            if mark and text.strip():
                return text.decode("utf-8", "replace").rstrip()
            if mark:  # the late mark of an earlier dump
                buf = rest
        if now >= deadline or (buf and now - last >= QUIET):
            return buf.decode("utf-8", "replace").rstrip() or None
        await anyio.sleep(_POLL)


#: The frames under the app's, in every worker's main thread: left out of the log.
_WORKER_FILE = '  File "' + os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_worker", ""
)
_RUNPY_FILE = '  File "<frozen runpy>"'


def _trimmed(lines: list[str]) -> list[str]:
    """A thread's frames without the trailing ones of the worker that called the app
    (all of them when the thread is in the worker's own code)."""
    ours = [line.startswith((_WORKER_FILE, _RUNPY_FILE)) for line in lines]
    for end in range(len(lines), 1, -1):
        if not ours[end - 1]:
            return lines[:end]
    return lines


def indent(text: str) -> str:
    """A dump as a block of the log entry it is part of, each thread's stack ending at
    the app's first frame (the worker's own frames under it say nothing)."""
    out: list[str] = []
    for block in text.split("\n\n"):
        out += ["    " + line for line in _trimmed(block.splitlines())] + [""]
    return "\n".join(out).rstrip()
