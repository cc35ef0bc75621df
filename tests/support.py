"""Process and timing helpers for tests that watch real worker processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

TESTS = Path(__file__).parent


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {timeout}s: {what or predicate}")
        time.sleep(0.01)


def pid_alive(pid: int) -> bool:
    """Is ``pid`` running (a zombie waiting to be reaped counts as gone)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def children_of(pid: int) -> set[int]:
    """Live children of ``pid`` (from /proc), to check that no worker is left behind."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Front:
    """``python -m wsgipool serve ...`` in a subprocess on a free loopback port."""

    def __init__(self, tmp_path: Path, *args: str, cwd: Path = TESTS, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"front-{self.port}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", "wsgipool", "serve", *args]
        command += ["-b", f"127.0.0.1:{self.port}"]
        self.proc = subprocess.Popen(
            command, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **env}
        )

    def ready(self, timeout: float = 30.0) -> Front:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the front exited early:\n{self.output()}")
            try:
                return httpx.get(self.url + "/-/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout, "the front to be ready")
        return self

    def get(self, path: str = "/") -> httpx.Response:
        return httpx.get(self.url + path, timeout=30)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.log.close()
