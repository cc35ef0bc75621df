"""Sockets handed over by systemd (``LISTEN_FDS``) or by ``--fd``; SO_REUSEPORT; the mode
of a unix socket."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support import free_port, wait_for
from wsgipool._serve.host import bind

TESTS = Path(__file__).parent


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).text == "Hello, world!"
    except httpx.TransportError:
        return False


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run(
    procs: list[subprocess.Popen[bytes]], argv: list[str], log: Path, **kwargs: object
) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=TESTS, stdout=out, stderr=out, **kwargs)  # type: ignore[call-overload]
    procs.append(proc)
    return proc


@pytest.mark.skipif(
    not shutil.which("systemd-socket-activate"), reason="no systemd-socket-activate"
)
def test_systemd_socket_activation(tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    port = free_port()
    log = tmp_path / "activated.log"
    argv = ["systemd-socket-activate", "-E", "PYTHONPATH", "-l", f"127.0.0.1:{port}",
            sys.executable, "-m", "wsgipool", "serve", "apps:hello", "-w", "1"]  # fmt: skip
    proc = run(started, argv, log)
    wait_for(lambda: answers(f"http://127.0.0.1:{port}/"), 30, "the activated server")
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    output = log.read_text()
    assert f"serving apps:hello on http://127.0.0.1:{port} (fd 3) with 1 workers" in output
    assert ":8000" not in output  # no default bind (127.0.0.1:8000) beside the socket handed over


def test_fd_and_listen_fds(tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    listening = socket.create_server(("127.0.0.1", 0))
    fd_port, listening_fd = listening.getsockname()[1], listening.fileno()
    argv = [sys.executable, "-m", "wsgipool", "serve", "apps:hello", "-w", "1"]
    run(started, [*argv, "--fd", str(listening.fileno())], tmp_path / "fd.log",
        pass_fds=(listening.fileno(),))  # fmt: skip

    # As systemd does it: descriptor 3, and LISTEN_PID the server's own pid (sh execs it).
    activated = socket.create_server(("127.0.0.1", 0))
    listen_port = activated.getsockname()[1]
    command = 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"'
    unused = free_port()  # the environment's bind gives way to the socket handed over
    run(started, ["sh", "-c", command, "sh", *argv], tmp_path / "listen_fds.log",
        pass_fds=(3,), preexec_fn=lambda: os.dup2(activated.fileno(), 3),
        env={**os.environ, "WSGIPOOL_BIND": f"127.0.0.1:{unused}"})  # fmt: skip
    listening.close()  # the servers hold their own copies
    activated.close()
    for port in (fd_port, listen_port):
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/"), 30, f"a server on {port}")  # noqa: B023
    activated_log = (tmp_path / "listen_fds.log").read_text()
    assert f"on http://127.0.0.1:{listen_port} (fd 3) with 1 workers" in activated_log
    assert str(unused) not in activated_log
    fd_banner = f"on http://127.0.0.1:{fd_port} (fd {listening_fd}) with 1 workers"
    assert fd_banner in (tmp_path / "fd.log").read_text()
    for proc in started:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_an_fd_that_is_not_a_listening_socket_is_refused(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        fd = sock.fileno()
        done = subprocess.run(
            [sys.executable, "-m", "wsgipool", "serve", "apps:hello", "--fd", str(fd)],
            cwd=TESTS, pass_fds=(fd,), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2
    assert f"--fd {fd}: descriptor {fd} is not listening" in done.stderr


def test_reuse_port_and_unix_socket_mode(tmp_path: Path) -> None:
    first = bind("127.0.0.1:0", reuse_port=True)
    port = first.sock.getsockname()[1]
    second = bind(f"127.0.0.1:{port}", reuse_port=True)  # shared, not "address in use"
    with pytest.raises(OSError, match="in use"):
        bind(f"127.0.0.1:{port}").close()
    for listener in (first, second):
        listener.close()
    path = tmp_path / "app.sock"
    unix = bind(f"unix:{path}", mode=0o660)
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    unix.close()
