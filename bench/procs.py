"""Servers under test as child processes: start, wait until they answer, measure, stop.

Shared by ``run.py``, ``memory.py``, ``replace.py`` and ``slow.py``, so every part of the
benchmark starts a server the same way and reads its CPU and memory from ``/proc`` alike.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def have(distribution: str) -> bool:
    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def children(pid: int) -> list[int]:
    """Every descendant of ``pid``."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(p) for p in task.read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def proc_status(pid: int, key: str) -> float:
    """A ``/proc/<pid>/status`` memory field in MiB (0 if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_rss(pid: int) -> float:
    """Resident MiB of a server and all its descendants."""
    return sum(proc_status(p, "VmRSS") for p in [pid, *children(pid)])


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(pid: int, backend: int | None = None) -> tuple[float, float, float, float]:
    """CPU seconds of the server, its children, waited-for children of ours, the machine.

    With a ``backend`` (nginx in front of gunicorn), the server is the proxy with its
    children and the children are the backend's.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    busy = sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4))  # not idle/iowait
    ours = resource.getrusage(resource.RUSAGE_CHILDREN)
    if backend is None:
        front = cpu_seconds(pid)
        workers = sum(cpu_seconds(kid) for kid in children(pid))
    else:
        front = sum(cpu_seconds(p) for p in [pid, *children(pid)])
        workers = sum(cpu_seconds(p) for p in [backend, *children(backend)])
    return (
        front,
        workers,
        ours.ru_utime + ours.ru_stime,
        busy / os.sysconf("SC_CLK_TCK"),
    )


def raise_fd_limit(wanted: int = 65536) -> int:
    """Lift this process's descriptor limit (children inherit it); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def bench_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a server: ours, with the repository first on ``PYTHONPATH``."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


def wait_ready(
    url: str,
    proc: subprocess.Popen[bytes],
    timeout: float = 60,
    ready: Callable[[], bool] | None = None,
) -> None:
    """Until ``GET /hello`` answers 200 (or ``ready()`` is true, for a server off TCP)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        if ready is not None:
            if ready():
                return
            time.sleep(0.1)
            continue
        try:
            with urllib.request.urlopen(url + "/hello", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not answer within {timeout}s")


@contextmanager
def serving(
    command: list[str],
    port: int,
    log: Path,
    env: Mapping[str, str] | None = None,
    grace: float = 15.0,
    ready: Callable[[], bool] | None = None,
) -> Iterator[tuple[int, str]]:
    """Run ``command`` (listening on ``port``) until the block ends: (pid, base URL)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=bench_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, ready=ready)
        yield proc.pid, url
    finally:
        stop(proc, grace)


def stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM (graceful), then SIGKILL whatever is left of the server's process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def gunicorn_command(target: str, port: int, workers: int, *extra: str) -> list[str]:
    return python(
        "-m", "gunicorn", "--workers", str(workers), "--worker-class", "sync",
        "--bind", f"127.0.0.1:{port}", "--log-level", "warning", *extra, target,
    )  # fmt: skip


def wsgipool_command(target: str, port: int, workers: int, *extra: str) -> list[str]:
    """``wsgipool serve``: uvicorn picks uvloop and httptools when installed, as in run.py."""
    return python(
        "-m", "wsgipool", "serve", target, "--workers", str(workers),
        "--bind", f"127.0.0.1:{port}", "--no-access-log", "--log-level", "warning", *extra,
    )  # fmt: skip


def log_tail(log: Path, size: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-size:]
    except OSError:
        return ""
