"""Worker replacement: from a worker's SIGKILL until its successor answers a request.

    python bench/replace.py            # 20 replacements per row
    python bench/replace.py --smoke    # 3 per row, to check that everything still runs

Each row is one server with one worker, so that every request after the kill has to wait
for the successor: wsgipool (``wsgipool serve``) with spawned workers and with ``--preload``
(workers forked from a template), and gunicorn sync workers, forked by its arbiter, without
and with ``--preload``, as the peer. The bench app's ``/pid`` names the worker that answered;
the bench kills that pid (after checking it is a descendant of the server it started, and
while the worker is idle), then asks ``/pid`` on fresh connections until a new pid answers.
The time runs from just before ``kill()`` to the last byte of that answer. Writes
``bench/results/replace.json``, which ``run.py``'s report includes; targets: 0.3 s spawned,
30 ms preloaded (the median).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import sections
from bench.procs import (
    RESULTS,
    children,
    free_port,
    gunicorn_command,
    log_tail,
    serving,
    wsgipool_command,
)

APP = "bench.app:app"
GIVE_UP = 10.0  # seconds without a successor: the row fails


@dataclass
class Row:
    server: str
    mode: str  # "spawn" (wsgipool spawns, gunicorn forks and imports) or "preload"
    times_ms: list[float] = field(default_factory=list)
    median_ms: float = 0.0
    max_ms: float = 0.0
    failed: str = ""


class Refused(Exception):
    """The server answered ``/pid`` with something other than 200."""


def ask_pid(port: int, timeout: float) -> int:
    """``GET /pid`` on a fresh connection: the pid of the process that answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"GET /pid HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise Refused(head.split(b"\r\n", 1)[0].decode(errors="replace") or "no answer")
    return int(body)


def replace_once(server: int, port: int, old: int) -> tuple[float, int]:
    """Kill worker ``old`` of ``server``: milliseconds until a new pid answered, and that pid."""
    if old not in children(server):
        raise RuntimeError(f"pid {old} is not a process of the server under test")
    began = time.perf_counter()
    os.kill(old, signal.SIGKILL)
    deadline = began + GIVE_UP
    while (left := deadline - time.perf_counter()) > 0:
        try:
            pid = ask_pid(port, left)
        except (OSError, Refused, ValueError):
            time.sleep(0.001)  # the front may refuse while it notices the death: ask again
            continue
        if pid != old:
            return (time.perf_counter() - began) * 1000, pid
    raise RuntimeError(f"no successor answered within {GIVE_UP:g} s")


def measure(server: str, mode: str, rounds: int, logs: Path) -> Row:
    row = Row(server, mode)
    port = free_port()
    extra = ("--preload",) if mode == "preload" else ()
    build = wsgipool_command if server == "wsgipool" else gunicorn_command
    log = logs / f"{server}-{mode}.log"
    try:
        with serving(build(APP, port, 1, *extra), port, log) as (pid, _):
            worker = ask_pid(port, GIVE_UP)
            for _ in range(rounds):
                time.sleep(0.1)  # the successor goes back to idle before it is killed in turn
                took, worker = replace_once(pid, port, worker)
                row.times_ms.append(took)
    except (RuntimeError, OSError, Refused, ValueError) as exc:
        row.failed = str(exc)[:200]
        print(log_tail(log), file=sys.stderr)
    if row.times_ms:
        row.median_ms = sections.median(row.times_ms)
        row.max_ms = max(row.times_ms)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="replacements per row")
    parser.add_argument("--smoke", action="store_true", help="3 replacements per row")
    parser.add_argument("--only", default="wsgipool,gunicorn", help="servers to measure")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds = 3
    rows = []
    with tempfile.TemporaryDirectory(prefix="wsgipool-replace-") as tmp:
        for server in args.only.split(","):
            for mode in ("spawn", "preload"):
                row = measure(server, mode, args.rounds, Path(tmp))
                rows.append(row)
                print(
                    f"  {server:9} {mode:8} "
                    + (
                        f"FAILED: {row.failed}"
                        if row.failed
                        else f"median {row.median_ms:7.1f} ms  max {row.max_ms:7.1f} ms"
                    ),
                    flush=True,
                )
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "smoke": args.smoke,
        "rounds": args.rounds,
        "workers": 1,
        "app": APP,
        "cells": [asdict(r) for r in rows],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "replace.json").write_text(json.dumps(result, indent=1) + "\n")
    print("\n" + "\n".join(sections.replace_lines(result)))
    return 1 if any(r.failed for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
