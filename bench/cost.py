"""What one request costs the front: CPU, wake-ups and syscalls per request.

    python bench/cost.py                 # wsgipool, the floor relay, nginx + gunicorn
    python bench/cost.py --strace        # also syscalls per request (a separate wrk run)
    python bench/cost.py --only wsgipool --seconds 3

Throughput on a shared machine moves with whatever else runs; what a request costs the
front does not, or much less. For each server (2 workers) and app, wrk drives it at 16
and at 2 connections, and the front's counters are read from ``/proc`` before and after:
CPU (utime + stime) and context switches (voluntary: the loop went to sleep and was woken;
involuntary: it was preempted), each divided by the requests answered; the workers' CPU
per request beside them. ``--strace`` attaches ``strace -c -f`` to the front during a
second run and divides its syscall count likewise (strace slows the server down: its run
gives only the counts).

The yardsticks: ``floor``, the minimal relay in ``--floor`` (an ASGI app under uvicorn that
passes a small environ to 2 worker processes over pipes, none of wsgipool's features; see
its README), which serves only the hello body, and nginx in front of gunicorn (nginx's
master and workers are that setup's front).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import nginx, sitedata
from bench.procs import children, cpu_seconds, free_port, have, python, serving, wsgipool_command
from bench.run import SITES, wrk_command

APPS = {"hello": ("bench.app:app", "/hello"), "django": (SITES["django"], "/page")}
Server = tuple[list[int], list[int], str]  # front pids, worker pids, base URL


def counters(pids: list[int]) -> tuple[float, int, int]:
    """CPU seconds, voluntary and involuntary context switches of ``pids`` (all threads)."""
    cpu, vol, invol = 0.0, 0, 0
    for pid in pids:
        cpu += cpu_seconds(pid)
        for status in Path(f"/proc/{pid}/task").glob("*/status"):
            try:
                lines = status.read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                if line.startswith("voluntary_ctxt_switches:"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    invol += int(line.split()[1])
    return cpu, vol, invol


def run_wrk(url: str, connections: int, seconds: float) -> int:
    """Requests wrk had answered in ``seconds`` (errors too: each cost the server)."""
    command = wrk_command(url, connections, seconds)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH "):
            return int(json.loads(line[6:])["requests"])
    raise RuntimeError(f"wrk failed: {done.stdout}{done.stderr}")


def syscalls(fronts: list[int], url: str, connections: int, seconds: float) -> int | None:
    """Syscalls of the front during a wrk run under ``strace -c -f`` (None: no strace)."""
    if shutil.which("strace") is None:
        return None
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        attach = [arg for pid in fronts for arg in ("-p", str(pid))]
        tracer = subprocess.Popen(
            ["strace", "-c", "-f", "-o", out.name, *attach], stderr=subprocess.DEVNULL
        )
        time.sleep(1.0)  # attaching takes a moment; the count is per request anyway
        try:
            requests = run_wrk(url, connections, seconds)
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(30)
        for line in out.read().splitlines():
            fields = line.split()  # % time, seconds, usecs/call, calls, [errors,] total
            if fields and fields[-1] == "total":
                return round(int(fields[3]) / max(requests, 1))
    return None


@contextmanager
def start(name: str, app: str, args: argparse.Namespace, logs: Path) -> Iterator[Server]:
    port = free_port()
    log = logs / f"{name}-{app.split(':')[0]}.log"
    if name == "wsgipool":
        with serving(wsgipool_command(app, port, 2), port, log) as (pid, url):
            yield [pid], children(pid), url
    elif name == "floor":
        command = python(
            "-m", "uvicorn", "toyfront:app", "--host", "127.0.0.1", "--port", str(port),
            "--loop", "uvloop" if have("uvloop") else "auto",
            "--http", "httptools" if have("httptools") else "auto",
            "--no-access-log", "--log-level", "warning",
        )  # fmt: skip
        env = {"PYTHONPATH": str(args.floor)}
        with serving(command, port, log, env) as (pid, url):
            yield [pid], children(pid), url
    else:
        with nginx.serving_pair(app, port, 2, log) as (pid, backend, url):
            yield [pid, *children(pid)], children(backend), url


def measure(server: Server, path: str, connections: int, args: argparse.Namespace) -> str:
    fronts, workers, url = server
    run_wrk(url + path, connections, args.warmup)
    front_before, work_before = counters(fronts), counters(workers)
    requests = max(run_wrk(url + path, connections, args.seconds), 1)
    front_after, work_after = counters(fronts), counters(workers)
    cpu, vol, invol = (b - a for a, b in zip(front_before, front_after, strict=True))
    worker_cpu = work_after[0] - work_before[0]
    worker_vol = work_after[1] - work_before[1]
    line = (
        f"{requests / args.seconds:8.0f} req/s  front {cpu / requests * 1e6:6.1f} µs/req  "
        f"{vol / requests:5.2f} vcsw/req  {invol / requests:5.2f} ivcsw/req  "
        f"workers {worker_cpu / requests * 1e6:7.1f} µs/req {worker_vol / requests:5.2f} vcsw/req"
    )
    if args.strace:
        calls = syscalls(fronts, url + path, connections, args.seconds)
        line += f"  {calls if calls is not None else '-'} syscalls/req"
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured per cell")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--only", default="wsgipool,floor,nginx", help="servers to measure")
    parser.add_argument("--apps", default="hello,django")
    parser.add_argument("--connections", default="16,2")
    parser.add_argument("--strace", action="store_true", help="also count syscalls")
    parser.add_argument("--floor", type=Path, default=Path("/work/shared/floor"))
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    servers = args.only.split(",")
    if "floor" in servers and not (args.floor / "toyfront.py").exists():
        print(f"no floor relay in {args.floor}: skipped", file=sys.stderr)
        servers.remove("floor")
    if "nginx" in servers and nginx.installed() is None:
        print("nginx is not installed: skipped", file=sys.stderr)
        servers.remove("nginx")
    with tempfile.TemporaryDirectory(prefix="wsgipool-cost-") as tmp:
        os.environ[sitedata.ENV] = str(sitedata.create(Path(tmp) / "site.sqlite3"))
        for app_name in args.apps.split(","):
            app, path = APPS[app_name]
            for name in servers:
                if name == "floor" and app_name != "hello":
                    continue  # the floor relay answers every path with the hello body
                with start(name, app, args, Path(tmp)) as server:
                    for conns in map(int, args.connections.split(",")):
                        label = f"{name:8} {app_name:6} {conns:2} conns"
                        print(f"{label}  {measure(server, path, conns, args)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
