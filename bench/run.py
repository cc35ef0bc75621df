"""Load each contender with wrk on loopback, one at a time, and compare them with wsgipool.

    python bench/run.py            # full run, ~8 s per cell, about 8 minutes
    python bench/run.py --smoke    # 1 s per cell, to check that everything still runs

Writes ``bench/results/latest.md``, ``latest.json`` and ``latest.png`` (the chart needs
matplotlib). Needs wrk: ``apt-get install -y wrk``; Python deps: ``bench/requirements.txt``.
The ``django`` and ``flask`` workloads serve ``bench/djangosite`` and ``bench/flasksite.py``
(one server start per contender and app) from a SQLite file made in a temporary directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import nginx, sitedata
from bench.procs import (
    RESULTS,
    ROOT,
    children,
    cpu_snapshot,
    free_port,
    gunicorn_command,
    have,
    log_tail,
    proc_status,
    python,
    serving,
)

LUA = ROOT / "bench" / "wrk.lua"
MIB = 1024 * 1024
BODY = 10 * MIB  # stream and upload size
APP = "bench.app:app"
SITES = {
    "django": "bench.djangosite.wsgi:application",
    "flask": "bench.flasksite:app",
}


def site(app: str) -> str:
    """Short name of a served app: ``app`` for ``bench.app``, else its key in ``SITES``."""
    return next((name for name, spec in SITES.items() if spec == app), "app")


@dataclass(frozen=True)
class Workload:
    name: str
    path: str
    connections: int
    upload: int = 0  # request body bytes (POST) or 0
    payload: int = 0  # bytes that count for MB/s; 0: what wrk read
    app: str = APP  # the WSGI app served, MODULE:ATTRIBUTE


WORKLOADS = (
    Workload("hello", "/hello", 16),
    Workload("hello-1conn", "/hello", 1),
    Workload("cpu", "/cpu", 16),
    Workload("stream", "/stream", 16, payload=BODY),
    Workload("upload", "/upload", 16, upload=BODY, payload=BODY),
    Workload("django", "/page", 16, app=SITES["django"]),
    Workload("flask", "/page", 16, app=SITES["flask"]),
)


@dataclass(frozen=True)
class Contender:
    name: str
    kind: str  # "uvicorn" (with factory), "gunicorn", "nginx" (in front of gunicorn), "serve"
    target: str  # the uvicorn factory; gunicorn serves the workload's app itself
    note: str
    hello_only: bool = False


CONTENDERS = (
    Contender(
        "uvicorn-asgi",
        "uvicorn",
        "bench.app:make_asgi",
        "bare ASGI hello, 1 uvicorn process (the ceiling)",
        hello_only=True,
    ),
    Contender(
        "asgiref",
        "uvicorn",
        "bench.app:make_asgiref",
        "asgiref WsgiToAsgi, in-process threads, 1 uvicorn process; asgiref 3.9 and "
        'later answer part of concurrent requests with 500 ("CurrentThreadExecutor '
        'already quit or is broken"): those count as errors, not in req/s',
    ),
    Contender(
        "a2wsgi",
        "uvicorn",
        "bench.app:make_a2wsgi",
        "a2wsgi WSGIMiddleware, in-process threads, 1 uvicorn process",
    ),
    Contender(
        "gunicorn",
        "gunicorn",
        APP,
        "gunicorn sync workers (no keep-alive), WORKERS workers",
    ),
    Contender(
        "nginx-gunicorn",
        "nginx",
        APP,
        "nginx (worker_processes auto, default proxy buffering) proxy_pass to gunicorn sync "
        "workers on a unix socket, WORKERS workers: the setup `wsgipool serve` replaces",
    ),
    Contender(
        "wsgipool",
        "uvicorn",
        "bench.app:make_wsgipool",
        "wsgipool WsgiToAsgi, 1 uvicorn process + WORKERS workers",
    ),
    Contender(
        "wsgipool-serve",
        "serve",
        APP,
        "`wsgipool serve` with its defaults (its own edge, request ids) but no access log, "
        "WORKERS workers: what replaces nginx + gunicorn",
    ),
)


@dataclass
class Cell:
    contender: str
    workload: str
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    mbps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    front_cpu: float = 0.0  # percent of one core during the measurement
    workers_cpu: float = 0.0
    wrk_cpu: float = 0.0
    others_cpu: float = 0.0  # CPU used by processes outside the benchmark (noise)
    front_us: float = 0.0  # front CPU µs per request (gunicorn: its workers', see report)
    workers_us: float = 0.0  # workers' CPU µs per request
    front_hwm_mib: float = 0.0
    worker_hwm_mib: float = 0.0  # the largest worker
    app: str = APP
    failed: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


# -- wrk ---------------------------------------------------------------------------------


def wrk_command(url: str, connections: int, seconds: float) -> list[str]:
    """wrk with one thread and ``bench/wrk.lua``, whose ``done()`` prints a BENCH line."""
    return [
        "wrk", "-t1", "-c", str(connections), "-d", f"{max(seconds, 1):g}s",
        "--timeout", "30s", "-s", str(LUA), url,
    ]  # fmt: skip


def wrk(url: str, workload: Workload, seconds: float) -> dict[str, Any]:
    env = dict(os.environ)
    if workload.upload:
        env["WRK_UPLOAD_BYTES"] = str(workload.upload)
    command = wrk_command(url + workload.path, workload.connections, seconds)
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=seconds + 90, check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith("BENCH "):
            return dict(json.loads(line[6:]))
    raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")


def server_command(contender: Contender, port: int, workers: int, app: str) -> list[str]:
    if contender.kind == "gunicorn":
        return gunicorn_command(app, port, workers)
    if contender.kind == "serve":
        return python(
            "-m", "wsgipool", "serve", app, "--workers", str(workers),
            "--bind", f"127.0.0.1:{port}", "--no-access-log", "--log-level", "warning",
        )  # fmt: skip
    return python(
        "-m", "uvicorn", "--factory", contender.target, "--host", "127.0.0.1",
        "--port", str(port), "--loop", "uvloop" if have("uvloop") else "auto",
        "--http", "httptools" if have("httptools") else "auto",
        "--no-access-log", "--log-level", "warning",
    )  # fmt: skip


def measure(
    server: tuple[int, int | None],
    url: str,
    contender: Contender,
    workload: Workload,
    warmup: float,
    seconds: float,
) -> Cell:
    """One cell; ``server`` is the front's pid and the backend's (gunicorn behind nginx)."""
    pid, backend = server
    cell = Cell(contender.name, workload.name, app=workload.app)
    if warmup:
        wrk(url, workload, warmup)
    cpu_before = cpu_snapshot(pid, backend)
    raw = wrk(url, workload, seconds)
    cpu_after = cpu_snapshot(pid, backend)
    cell.raw = raw
    cell.seconds = raw["duration_us"] / 1e6
    cell.requests = raw["requests"] - raw["status"]  # answered with 2xx (or 3xx)
    cell.rps = cell.requests / cell.seconds
    moved = cell.requests * workload.payload if workload.payload else raw["bytes"]
    cell.mbps = moved / cell.seconds / 1e6
    cell.p50_ms, cell.p99_ms = raw["p50_us"] / 1000, raw["p99_us"] / 1000
    cell.errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    used = [
        100 * (after - before) / cell.seconds
        for before, after in zip(cpu_before, cpu_after, strict=True)
    ]
    cell.front_cpu, cell.workers_cpu, cell.wrk_cpu = used[:3]
    cell.others_cpu = max(used[3] - sum(used[:3]), 0.0)
    # CPU per request counts every answer, errors too: each cost the server its work.
    answered = max(raw["requests"], 1)
    front, workers = (cpu_after[i] - cpu_before[i] for i in (0, 1))
    if contender.kind == "gunicorn":  # the arbiter only watches: its workers are the front
        front = front + workers
    cell.front_us, cell.workers_us = front / answered * 1e6, workers / answered * 1e6
    cell.front_hwm_mib = proc_status(pid, "VmHWM")
    kids = children(pid if backend is None else backend)
    cell.worker_hwm_mib = max([proc_status(kid, "VmHWM") for kid in kids], default=0.0)
    return cell


def run_contender(contender: Contender, args: argparse.Namespace, logs: Path) -> list[Cell]:
    """Every chosen workload of one contender: one server per WSGI app served."""
    workloads = [
        w
        for w in WORKLOADS
        if w.name in args.workloads
        and (not contender.hello_only or (w.path == "/hello" and w.app == APP))
    ]
    cells: list[Cell] = []
    for app in dict.fromkeys(w.app for w in workloads):
        group = [w for w in workloads if w.app == app]
        log = logs / f"{contender.name}-{site(app)}.log"
        cells += run_app(contender, app, group, args, log)
    return cells


def run_app(
    contender: Contender, app: str, workloads: list[Workload], args: argparse.Namespace, log: Path
) -> list[Cell]:
    cells: list[Cell] = []
    port = free_port()
    env = {"BENCH_WORKERS": str(args.workers), "BENCH_APP": app}
    try:
        with start(contender, app, port, args.workers, log, env) as (server, url):
            for workload in workloads:
                print(f"  {contender.name:14} {workload.name:12}", end=" ", flush=True)
                try:
                    cell = measure(server, url, contender, workload, args.warmup, args.duration)
                except (RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
                    cell = Cell(contender.name, workload.name, app=app, failed=str(exc)[:300])
                cells.append(cell)
                print(summary_line(cell), flush=True)
    except RuntimeError as exc:
        print(f"  {contender.name} ({app}): could not start: {exc}", flush=True)
        cells += [
            Cell(contender.name, w.name, app=app, failed=str(exc))
            for w in workloads
            if all(c.workload != w.name for c in cells)
        ]
    if any(c.failed for c in cells):
        print(log_tail(log), file=sys.stderr)
    return cells


@contextmanager
def start(
    contender: Contender, app: str, port: int, workers: int, log: Path, env: dict[str, str]
) -> Iterator[tuple[tuple[int, int | None], str]]:
    """The contender's server(s): ((front pid, backend pid or None), base URL)."""
    if contender.kind == "nginx":
        with nginx.serving_pair(app, port, workers, log, env) as (pid, backend, url):
            yield (pid, backend), url
        return
    command = server_command(contender, port, workers, app)
    with serving(command, port, log, env) as (pid, url):
        yield (pid, None), url


def keep(best: dict[tuple[str, str], Cell], cell: Cell) -> None:
    """Keep the better of two runs of a cell: more req/s (the peak RSS seen by either)."""
    key = (cell.contender, cell.workload)
    old = best.get(key)
    if old is None or (old.failed and not cell.failed) or (not cell.failed and cell.rps > old.rps):
        best[key] = cell
        if old is not None and not old.failed:
            cell.front_hwm_mib = max(cell.front_hwm_mib, old.front_hwm_mib)
            cell.worker_hwm_mib = max(cell.worker_hwm_mib, old.worker_hwm_mib)
    elif not cell.failed:
        old.front_hwm_mib = max(cell.front_hwm_mib, old.front_hwm_mib)
        old.worker_hwm_mib = max(cell.worker_hwm_mib, old.worker_hwm_mib)


def summary_line(cell: Cell) -> str:
    if cell.failed:
        return f"FAILED: {cell.failed}"
    return (
        f"{cell.rps:9.0f} req/s {cell.mbps:8.1f} MB/s  p50 {cell.p50_ms:7.2f} ms  "
        f"p99 {cell.p99_ms:7.2f} ms  err {cell.errors}  cpu front {cell.front_cpu:3.0f}% "
        f"workers {cell.workers_cpu:3.0f}% wrk {cell.wrk_cpu:3.0f}% "
        f"others {cell.others_cpu:3.0f}%  front {cell.front_us:5.0f} µs/req"
    )


# -- report ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="1 s per cell, short warm-up")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per cell")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per cell")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every cell this many times and keep the best (noisy machines)",
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn and wsgipool workers")
    parser.add_argument("--only", default="", help="comma-separated contenders to run")
    parser.add_argument("--workloads", default=",".join(w.name for w in WORKLOADS))
    parser.add_argument("--out", type=Path, default=RESULTS, help="where latest.* go")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if a target of the issue is missed (not with --smoke)",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="measure nothing: rebuild latest.md and latest.png from latest.json and the "
        "newest memory/replace/slow results",
    )
    args = parser.parse_args(argv)
    if args.report:
        return rebuild_report(args.out)
    if args.smoke:
        args.duration, args.warmup = 1.0, 0.5
    args.workloads = args.workloads.split(",")
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get update && apt-get install -y wrk", file=sys.stderr)
        return 2
    chosen = [c for c in CONTENDERS if not args.only or c.name in args.only.split(",")]
    skipped = {}
    if nginx.installed() is None and any(c.kind == "nginx" for c in chosen):
        skipped = {c.name: "skipped: nginx is not installed" for c in chosen if c.kind == "nginx"}
        print("nginx is not installed: nginx-gunicorn is skipped", file=sys.stderr)
        chosen = [c for c in chosen if c.kind != "nginx"]
    from bench import report  # after the wrk check: report imports nothing heavy anyway

    best: dict[tuple[str, str], Cell] = {}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wsgipool-bench-") as tmp:
        # Servers inherit the variable; the apps only read the file.
        os.environ[sitedata.ENV] = str(sitedata.create(Path(tmp) / "site.sqlite3"))
        for round_ in range(args.repeat):
            if args.repeat > 1:
                print(f"round {round_ + 1} of {args.repeat}", flush=True)
            for contender in chosen:
                for cell in run_contender(contender, args, Path(tmp)):
                    keep(best, cell)
    cells = list(best.values())
    meta = environment(args, chosen, time.monotonic() - began)
    meta["contenders"].update(skipped)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(
        json.dumps({"meta": meta, "cells": [dataclasses.asdict(c) for c in cells]}, indent=1) + "\n"
    )
    markdown, missed = report.markdown(cells, meta)
    (args.out / "latest.md").write_text(markdown)
    print("\n" + markdown)
    chart = report.chart(cells, meta, args.out / "latest.png")
    print(
        f"wrote {args.out / 'latest.md'}, " + (str(chart) if chart else "no chart (no matplotlib)")
    )
    if any(c.failed for c in cells):
        return 1
    return 1 if args.check and not args.smoke and missed else 0


def rebuild_report(out: Path) -> int:
    """The report of the last run again, with whatever ran since (memory, replace, slow)."""
    from bench import report

    saved = json.loads((out / "latest.json").read_text())
    cells = [Cell(**cell) for cell in saved["cells"]]
    markdown, _ = report.markdown(cells, saved["meta"])
    (out / "latest.md").write_text(markdown)
    report.chart(cells, saved["meta"], out / "latest.png")
    print(f"rewrote {out / 'latest.md'} from {out / 'latest.json'}")
    return 0


def environment(
    args: argparse.Namespace, chosen: list[Contender], elapsed: float
) -> dict[str, Any]:
    versions = {}
    for name in (
        "wsgipool",
        "uvicorn",
        "uvloop",
        "httptools",
        "gunicorn",
        "asgiref",
        "a2wsgi",
        "msgpack",
        "anyio",
        "django",
        "flask",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    if binary := nginx.installed():
        done = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
        versions["nginx"] = done.stderr.strip().rpartition("/")[2] or "?"
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "versions": versions,
        "wrk": (wrk_version.stdout or wrk_version.stderr).split("[")[0].strip(),
        "duration": args.duration,
        "warmup": args.warmup,
        "workers": args.workers,
        "repeat": args.repeat,
        "smoke": args.smoke,
        "elapsed": round(elapsed),
        "contenders": {c.name: c.note.replace("WORKERS", str(args.workers)) for c in chosen},
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


if __name__ == "__main__":
    sys.exit(main())
