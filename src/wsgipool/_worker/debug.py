"""What the front may ask of a busy worker by signal: its stacks, and to stop the request.

Signals, not frames: the worker's main thread runs the app and reads the channel only
between requests, and a stuck app never comes back to read one.

* ``STACKS_SIGNAL`` (SIGUSR2): :mod:`faulthandler` writes every thread's Python stack into the
  worker's *stack pipe*, from its C signal handler. That works wherever the app is stuck:
  in Python, in a C call that released the GIL (a sleep, a socket read, a lock) and even
  in one that holds it, where a Python-level handler would never run. Once the main
  thread runs Python again, a chained Python handler writes :data:`END_MARK`, so the
  front knows the dump is whole without waiting for the pipe to go quiet.
* ``INTERRUPT_SIGNAL`` (SIGUSR1): raises :class:`~wsgipool._errors.RequestTimeout` in the main
  thread while the app runs (a sleep, a read or a lock wait is broken off by the signal),
  so the app's own error handling records where it was. Never inside the worker's own
  writes to the channel (a frame cut in half would corrupt it): there it is held back
  until the write is done.

The front opens the stack pipe as ``/proc/<pid>/fd/<n>`` (READY says ``n``).
"""

from __future__ import annotations

import contextlib
import faulthandler
import fcntl
import os
import signal
import threading
from types import FrameType

from .._errors import RequestTimeout
from .._wire.kinds import END_MARK, INTERRUPT_SIGNAL, STACKS_SIGNAL

#: Room in the stack pipe: a dump that does not fit is cut, never waited for.
STACK_PIPE_SIZE = 1024 * 1024


def _restart_calls() -> None:
    """A dump of the stacks must not make the app's system calls fail with EINTR (Python
    retries them, a C library may not): the kernel restarts those it can."""
    signal.siginterrupt(STACKS_SIGNAL, False)


class Signals:
    """The worker's end of the stack pipe and the state the interrupt handler reads."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.write_fd, fcntl.F_SETPIPE_SZ, STACK_PIPE_SIZE)
        os.set_blocking(self.write_fd, False)  # a full pipe cuts the dump, never blocks
        self.main = threading.get_ident()  # where Python signal handlers run
        self.armed = False  # the app runs: an interrupt may be raised
        self.held = False  # the worker writes a frame: an interrupt waits
        self.pending = False  # an interrupt came while held

    def install(self) -> None:
        """Register both handlers (in the main thread: Python handlers live there)."""
        signal.signal(STACKS_SIGNAL, self._stacks_done)
        faulthandler.register(STACKS_SIGNAL, file=self.write_fd, all_threads=True, chain=True)
        _restart_calls()
        signal.signal(INTERRUPT_SIGNAL, self._interrupt)

    def _stacks_done(self, signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):
            os.write(self.write_fd, END_MARK)
        _restart_calls()  # faulthandler registered itself again, without the flag

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        if not self.armed:
            return  # between requests, or the app is done: nothing to stop
        if self.held:
            self.pending = True
            return
        self.armed = False  # once per request
        raise RequestTimeout("the request ran past its timeout")

    def arm(self) -> None:
        """The app's code runs for a request from now on: interrupts are raised."""
        self.armed, self.pending = True, False

    def disarm(self) -> None:
        """The app is done (or failed): interrupts are ignored again."""
        self.armed = self.pending = False

    def hold(self) -> bool:
        """A write to the channel begins: an interrupt waits until :meth:`release`.
        False (and nothing held) outside the main thread, which interrupts never reach."""
        if threading.get_ident() != self.main:
            return False
        self.held = True
        return True

    def release(self) -> None:
        """The write is done: an interrupt that came meanwhile is raised now."""
        self.held = False
        if self.pending and self.armed:
            self.pending = self.armed = False
            raise RequestTimeout("the request ran past its timeout")
