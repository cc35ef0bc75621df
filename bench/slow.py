"""Slow and hostile clients: how long a plain ``GET /hello`` waits while K attackers hold on.

    python bench/slow.py            # K = 10, 100, 1000; 5 probes per cell, 10 s timeout each
    python bench/slow.py --smoke    # K = 2; 2 probes, 2 s timeout: checks that everything runs

Every cell is one server (started afresh, 2 workers), one kind of attack with K connections
(see ``sections.ATTACKS``), and probes: ``GET /hello`` on a fresh connection, one after
another, each timed from connect to the last byte and given up after the timeout. A cell
stops probing after two timeouts in a row (what follows would only wait as long again), and
every attack connection is closed when its cell ends, so nothing outlives the cell. The
bench watches the server's memory and ends a cell early if the server tree grows past
``--max-rss-mib``. Writes ``bench/results/slow.json``, which ``run.py``'s report includes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import selectors
import socket
import stat
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import sections
from bench.procs import (
    RESULTS,
    free_port,
    gunicorn_command,
    have,
    log_tail,
    proc_status,
    python,
    raise_fd_limit,
    serving,
    tree_rss,
    wsgipool_command,
)

APP = "bench.app:app"
WORKERS = 2
TICK = 0.5  # seconds between two trickles of the slow attackers
TCP_ESTABLISHED = 1
OPEN_BUDGET = 20.0  # seconds to open all K attack connections
KINDS = ("upload", "read", "idle", "slowloris")  # a mixed attack: K/4 of each, in turn
HOST = b"Host: 127.0.0.1\r\n"


@dataclass(frozen=True)
class Server:
    name: str
    command: Callable[[int], list[str]]
    note: str
    needs: str = ""  # a distribution that must be installed


def granian_command(port: int) -> list[str]:
    return python(
        "-m", "granian", "--interface", "wsgi", "--workers", str(WORKERS),
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        "--no-access-log", APP,
    )  # fmt: skip


SERVERS = (
    Server(
        "wsgipool",
        lambda port: wsgipool_command(APP, port, WORKERS),
        f"`wsgipool serve`, {WORKERS} workers, default settings (uvicorn with uvloop and "
        "httptools when installed)",
    ),
    Server(
        "gunicorn",
        lambda port: gunicorn_command(APP, port, WORKERS),
        f"gunicorn sync, {WORKERS} workers, default settings (30 s timeout)",
    ),
    Server(
        "granian",
        granian_command,
        f"Granian WSGI, {WORKERS} worker processes, default settings",
        needs="granian",
    ),
    Server(
        "waitress",
        lambda port: python("-m", "waitress", f"--listen=127.0.0.1:{port}", "--threads=4", APP),
        "waitress, one process, 4 threads (its default)",
        needs="waitress",
    ),
)


# -- HTTP over raw sockets ---------------------------------------------------------------


def read_response(sock: socket.socket, deadline: float) -> int:
    """Read one response with a Content-Length body; its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += _recv(sock, deadline)
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += _recv(sock, deadline)
    return status


def _recv(sock: socket.socket, deadline: float) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    sock.settimeout(left)
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionResetError("closed before the end of the response")
    return chunk


def probe(port: int, timeout: float) -> float | str:
    """Milliseconds to answer ``GET /hello`` on a fresh connection, or why it was not."""
    began = time.monotonic()
    deadline = began + timeout
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET /hello HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n")
            status = read_response(sock, deadline)
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "reset"
    except (ValueError, IndexError):
        return "garbled"
    if status != 200:
        return str(status)
    return (time.monotonic() - began) * 1000


# -- attackers ---------------------------------------------------------------------------


def _trickle_headers() -> bytes:
    return b"".join(b"X-Pad-%d: y\r\n" % n for n in range(1000))  # never the blank line


class Attack(threading.Thread):
    """K connections of one kind, held (and trickled) by one thread until ``stop``.

    The thread also ends at its deadline and closes every socket it opened, whatever the
    rest of the bench does.
    """

    def __init__(self, kind: str, port: int, k: int, lasts: float) -> None:
        super().__init__(daemon=True)
        self.kind, self.port, self.k = kind, port, k
        self.deadline = time.monotonic() + lasts
        self.ready, self.done = threading.Event(), threading.Event()
        self.socks: list[socket.socket] = []
        self.selector = selectors.DefaultSelector()
        self.pending: dict[socket.socket, bytes] = {}
        self.kinds: dict[socket.socket, str] = {}  # each connection's kind (mixed: all four)
        self.opened = self.cut = 0
        self.error = ""

    def stop(self) -> None:
        self.done.set()
        self.join(10)

    def run(self) -> None:
        try:
            self._open_all()
        finally:
            self.ready.set()
        try:
            tick = time.monotonic() + TICK  # the first piece went out with the request
            while not self.done.is_set() and (now := time.monotonic()) < self.deadline:
                if now >= tick:
                    self._trickle()
                    tick = tick + TICK if tick + TICK > now else now + TICK  # never a burst
                self._watch(max(tick - time.monotonic(), 0))
        finally:
            for sock in self.socks:
                sock.close()
            self.socks.clear()
            self.selector.close()

    def _open_all(self) -> None:
        until = time.monotonic() + OPEN_BUDGET
        for n in range(self.k):
            left = until - time.monotonic()
            if self.done.is_set() or left <= 0:
                self.error = self.error or f"not all open after {OPEN_BUDGET:g} s"
                return
            try:
                kind = KINDS[n % len(KINDS)] if self.kind == "mixed" else self.kind
                self.socks.append(self._open(kind, min(left, 5)))
                self.opened += 1
            except OSError as exc:
                self.error = f"{type(exc).__name__}: {exc}"

    def _open(self, kind: str, timeout: float) -> socket.socket:
        sock = socket.socket()
        self.kinds[sock] = kind
        try:
            if kind == "read":  # the client's window stays tiny: the server must wait
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(timeout)
            sock.connect(("127.0.0.1", self.port))
            if kind == "upload":
                sock.sendall(
                    b"POST /upload HTTP/1.1\r\n" + HOST + b"Content-Type: "
                    b"application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
                )
                self.pending[sock] = b"u" * 100000
            elif kind == "read":
                sock.sendall(b"GET /big HTTP/1.1\r\n" + HOST + b"\r\n")
            elif kind == "idle":  # a whole exchange, then nothing: keep-alive idles
                sock.sendall(b"GET /hello HTTP/1.1\r\n" + HOST + b"\r\n")
            else:  # slowloris: the request line, then headers a few bytes at a time
                sock.sendall(b"GET /hello HTTP/1.1\r\n" + HOST)
                self.pending[sock] = _trickle_headers()
            sock.setblocking(False)
            self._send(sock)  # the first byte at once: the request is under way
            if kind != "read":  # a reader's socket is always readable: not watched
                self.selector.register(sock, selectors.EVENT_READ)
        except BaseException:
            self.kinds.pop(sock, None)
            sock.close()
            raise
        return sock

    def _watch(self, timeout: float) -> None:
        """Count connections the server closed, or answered before the request was whole
        (a refusal such as 408); an idle connection's own response is read and dropped."""
        if self.selector.get_map():
            ready = [key.fileobj for key, _ in self.selector.select(timeout)]
        else:
            self.done.wait(timeout)
            ready = []
        for sock in ready:
            assert isinstance(sock, socket.socket)
            if self.kinds.get(sock) != "idle" or not _recv_some(sock):
                self._drop(sock)
        for sock in list(self.socks):
            if not _established(sock):
                self._drop(sock)

    def _trickle(self) -> None:
        for sock in list(self.socks):
            try:
                self._send(sock)
            except OSError:
                self._drop(sock)

    def _send(self, sock: socket.socket) -> None:
        """The next piece of a trickle: uploads 1 byte a tick (2 B/s), slowloris 2 (4 B/s)."""
        data = self.pending.get(sock)
        if data:
            step = 1 if self.kinds.get(sock) == "upload" else 2
            sent = sock.send(data[:step])
            self.pending[sock] = data[sent:]

    def _drop(self, sock: socket.socket) -> None:
        if sock in self.socks:
            self.socks.remove(sock)
            self.pending.pop(sock, None)
            if self.kinds.pop(sock, None) != "read":
                self.selector.unregister(sock)
            sock.close()
            self.cut += 1


def _recv_some(sock: socket.socket) -> bool:
    """Read what is there: False if the peer has closed."""
    try:
        return bool(sock.recv(65536))
    except BlockingIOError:
        return True
    except OSError:
        return False


def _established(sock: socket.socket) -> bool:
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    except OSError:
        return False
    return bool(struct.unpack("B", info[:1])[0] == TCP_ESTABLISHED)


# -- cells -------------------------------------------------------------------------------


@dataclass
class Cell:
    server: str
    attack: str
    k: int
    probes: list[float | str] = field(default_factory=list)
    median_ms: float | None = None  # None: no answer (JSON has no infinity)
    max_ms: float | None = None
    opened: int = 0  # attack connections established
    closed: int = 0  # of those, closed or answered by the server during the cell
    refused: int = 0  # probes answered 503
    front_growth_mib: float = 0.0  # the first process's RSS: peak less start
    tree_growth_mib: float = 0.0  # all the server's processes together, likewise
    disk_peak_mib: float = 0.0  # unlinked files the first process held open (a spool), peak
    note: str = ""  # what went wrong in a cell that was measured all the same
    failed: str = ""  # the cell could not be measured


class Guard(threading.Thread):
    """Samples the server's memory and spool files; sets ``tripped`` if its processes
    together exceed ``limit`` MiB."""

    def __init__(self, pid: int, limit: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.limit = pid, limit
        self.tripped, self.done = threading.Event(), threading.Event()
        self.start_front, self.start_tree = proc_status(pid, "VmRSS"), tree_rss(pid)
        self.peak = self.peak_front = self.peak_disk = 0.0

    def run(self) -> None:
        while not self.done.wait(0.25):
            self.peak = max(self.peak, tree_rss(self.pid))
            self.peak_front = max(self.peak_front, proc_status(self.pid, "VmRSS"))
            self.peak_disk = max(self.peak_disk, unlinked_mib(self.pid))
            if self.peak > self.limit:
                self.tripped.set()
                return


def unlinked_mib(pid: int) -> float:
    """MiB on disk of the unlinked regular files ``pid`` holds open (wsgipool's spool)."""
    total = 0
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0.0
    for fd in fds:
        try:
            info = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) and info.st_nlink == 0:
            total += info.st_blocks * 512
    return total / (1 << 20)


def run_cell(server: Server, attack: str, k: int, args: argparse.Namespace, log: Path) -> Cell:
    cell = Cell(server.name, attack, k)
    port = free_port()
    lasts = args.settle + args.probes * (args.timeout + args.gap) + 10
    with serving(server.command(port), port, log, grace=3) as (pid, _):
        guard = Guard(pid, args.max_rss_mib)
        guard.start()
        attackers = Attack(attack, port, k, lasts)
        attackers.start()
        try:
            attackers.ready.wait(lasts)
            guard.tripped.wait(args.settle)  # the attack's requests reach the workers
            timeouts = 0
            for _ in range(args.probes):
                if guard.tripped.is_set() or timeouts == 2:
                    break
                result = probe(port, args.timeout)
                cell.probes.append(result)
                timeouts = timeouts + 1 if result == "timeout" else 0
                guard.tripped.wait(args.gap)
        finally:
            attackers.stop()
            guard.done.set()
        cell.opened, cell.closed = attackers.opened, attackers.cut
        cell.refused = sum(p == "503" for p in cell.probes)
        cell.front_growth_mib = max(0.0, guard.peak_front - guard.start_front)
        cell.tree_growth_mib = max(0.0, guard.peak - guard.start_tree)
        cell.disk_peak_mib = guard.peak_disk
        if attackers.opened < k:
            cell.note = f"{k - attackers.opened} attackers could not connect: {attackers.error}"
        if guard.tripped.is_set():
            cell.note = f"server grew past {args.max_rss_mib:g} MiB: cell ended early"
    times = [p if isinstance(p, float) else math.inf for p in cell.probes]
    if times:
        worst, middle = max(times), sections.median(times)
        cell.median_ms = None if math.isinf(middle) else middle
        cell.max_ms = None if math.isinf(worst) else worst
    return cell


def describe(cell: Cell, timeout: float) -> str:
    return sections.slow_cell(asdict(cell), timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="K = 2, 2 probes, 2 s timeout")
    parser.add_argument("--ks", default="10,100,1000", help="attack sizes K")
    parser.add_argument("--attacks", default=",".join(sections.ATTACKS))
    parser.add_argument("--only", default="", help="comma-separated servers to run")
    parser.add_argument("--probes", type=int, default=5, help="probes per cell")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per probe")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds before probing")
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between probes")
    parser.add_argument("--max-rss-mib", type=float, default=2048.0, help="server memory cap")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.ks, args.probes, args.timeout = "2", 2, 2.0
    ks = [int(k) for k in args.ks.split(",")]
    attacks = args.attacks.split(",")
    chosen = [
        s
        for s in SERVERS
        if (not args.only or s.name in args.only.split(",")) and (not s.needs or have(s.needs))
    ]
    limit = raise_fd_limit(max(4 * max(ks) + 1024, 4096))
    print(f"descriptor limit {limit}", flush=True)
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="wsgipool-slow-") as tmp:
        for server in chosen:
            for attack in attacks:
                for k in ks:
                    log = Path(tmp) / f"{server.name}-{attack}-{k}.log"
                    print(f"  {server.name:9} {attack:10} K={k:<4}", end=" ", flush=True)
                    try:
                        cell = run_cell(server, attack, k, args, log)
                    except (RuntimeError, OSError) as exc:
                        cell = Cell(server.name, attack, k, failed=str(exc)[:200])
                        print(log_tail(log, 1500), file=sys.stderr)
                    cells.append(cell)
                    print(describe(cell, args.timeout), flush=True)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "smoke": args.smoke,
        "probes": args.probes,
        "timeout_s": args.timeout,
        "workers": WORKERS,
        "ks": ks,
        "servers": {s.name: s.note for s in chosen},
        "cells": [asdict(c) for c in cells],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "slow.json").write_text(json.dumps(result, indent=1) + "\n")
    print("\n" + "\n".join(sections.slow_lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
