"""Apps that get stuck on purpose, each in a function of its own name, so a test can look
for it in the stacks wsgipool logs: in Python, in a sleep, in a socket read, in a lock,
in C code that holds the GIL."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

Environ = dict[str, Any]


def spin_in_python() -> None:
    while True:
        pass


def sleep_in_c() -> None:
    time.sleep(60)


def read_a_silent_socket() -> None:
    left, _right = socket.socketpair()
    left.recv(1)  # the other end never sends


def wait_on_a_lock() -> None:
    lock = threading.Lock()
    lock.acquire()
    lock.acquire()


def hold_the_gil_in_c() -> None:
    sum(range(10**15))  # one C call that never lets another thread run nor checks signals


def ignore_interrupts() -> None:
    while True:
        with contextlib.suppress(Exception):
            time.sleep(60)


STUCK = {
    "/python": spin_in_python,
    "/sleep": sleep_in_c,
    "/recv": read_a_silent_socket,
    "/lock": wait_on_a_lock,
    "/gil": hold_the_gil_in_c,
    "/stubborn": ignore_interrupts,
}


def app(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """``/python``, ``/sleep``, ``/recv``, ``/lock``, ``/gil`` hang; ``/nap?s=N`` naps;
    ``/oom?events=PATH`` dies as the OOM killer's victim of a fake cgroup."""
    path = environ["PATH_INFO"]
    if path == "/oom":  # as the kernel would: count an OOM kill in the cgroup, then SIGKILL
        with open(environ["QUERY_STRING"].partition("=")[2], "w") as events:
            events.write("oom 1\noom_kill 1\n")
        os.kill(os.getpid(), signal.SIGKILL)
    if path == "/nap":
        time.sleep(float(environ["QUERY_STRING"].partition("=")[2]))
    elif path in STUCK:
        STUCK[path]()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done"]
