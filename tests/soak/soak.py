"""Soak: many concurrent requests against wsgipool under uvicorn while workers get SIGKILLed.

    python tests/soak/soak.py [--seconds 60] [--concurrency 64] [--workers 4]

Starts ``uvicorn`` in a subprocess on 127.0.0.1 serving ``WsgiToAsgi("soak:wsgi_app")``,
sends plain, slow (``?s=0.2``), streaming and crashing (``os._exit``) requests from
``--concurrency`` client tasks (one raw keep-alive HTTP/1.1 connection each), and meanwhile
SIGKILLs a random worker (a child of the server process) every 100-500 ms. Every response
carries its worker's pid in ``X-Worker-Pid``, so a failure can be pinned on a kill. The
server also answers ``GET /-/pool`` with the pool's own view of its workers, printed when
the bar is missed.

The bar (exit status 1 if missed):

* no request hung (unanswered within the client timeout);
* no connection error that a kill or a crash request does not explain: an error before
  the response headers (pid unknown), or after them from a worker nobody killed;
* no status other than 200, 502, 503 or 504 (the app itself never fails: a 500 is a
  wrong answer), and no more 502s than kills plus crash requests (each can cost at most
  the one request its worker was serving);
* the pool is back to ``--workers`` live processes after a settle period, and the server
  exits cleanly leaving no worker behind.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support import children_of, free_port  # tests/ is put on the path above
from support import pid_alive as alive

KINDS = (("plain", 0.86), ("slow", 0.06), ("stream", 0.05), ("crash", 0.03))
EXPECTED_STATUS = ("200", "502", "503", "504")
PATHS = {"plain": "/", "slow": "/?s=0.2", "stream": "/?stream=10", "crash": "/?crash=1"}


# -- the app the workers import as soak:wsgi_app ----------------------------------------


def _chunks(count: int) -> Iterator[bytes]:
    for _ in range(count):
        time.sleep(0.01)
        yield b"chunk\n"


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """``?crash=1``: die; ``?s=N``: sleep first; ``?stream=N``: N chunks 10 ms apart."""
    query = environ.get("QUERY_STRING", "")
    params = dict(part.partition("=")[::2] for part in query.split("&") if part)
    if "crash" in params:
        os._exit(1)
    if "s" in params:
        time.sleep(float(params["s"]))
    pid = str(os.getpid())
    headers = [("Content-Type", "text/plain"), ("X-Worker-Pid", pid)]
    if "stream" in params:
        start_response("200 OK", headers)
        return _chunks(int(params["stream"]))
    headers.append(("Content-Length", str(len(pid))))
    start_response("200 OK", headers)
    return [pid.encode()]


# -- server side ----------------------------------------------------------------------


def serve(port: int, workers: int) -> None:
    import json

    import uvicorn

    from wsgipool import WsgiToAsgi

    app = WsgiToAsgi("soak:wsgi_app", workers=workers)

    async def with_state(scope: Any, receive: Any, send: Any) -> None:
        """``GET /-/pool``: the pool's own view of its workers, as JSON."""
        if scope["type"] != "http" or scope["path"] != "/-/pool":
            return await app(scope, receive, send)
        stats = app.stats()
        state = {
            "idle": [w.pid for w in stats.idle],
            "busy": [w.pid for w in stats.workers if w.state == "busy"],
            "retiring": [w.pid for w in stats.workers if w.state == "retiring"],
            "starting": stats.starting,
            "waiting": stats.waiting,
            "failures": stats.failures,
            "restarts": dict(stats.restarts),
        }
        body = json.dumps(state).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(with_state, host="127.0.0.1", port=port, log_level="warning", lifespan="on")


# -- driver ---------------------------------------------------------------------------


class Outcome:
    __slots__ = ("error", "hung", "kind", "pid", "status")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.status: int | None = None
        self.pid: int | None = None
        self.error: str | None = None
        self.hung = False


class Connection:
    """One keep-alive HTTP/1.1 connection, reopened after an error; just enough of a client."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: Any = None
        self.writer: Any = None

    async def get(self, path: str, outcome: Outcome) -> None:
        """GET ``path``; fills in ``outcome`` as the answer arrives (pid before the body)."""
        import asyncio

        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: soak\r\n\r\n".encode())
        await self.writer.drain()
        head = await self.read_until(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        outcome.status = int(status_line.split()[1])
        headers = {}
        for line in filter(None, lines):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "x-worker-pid" in headers:
            outcome.pid = int(headers["x-worker-pid"])
        if headers.get("transfer-encoding") == "chunked":
            while size := int((await self.read_until(b"\r\n")).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            await self.read_until(b"\r\n")  # no trailers
        else:
            await self.reader.readexactly(int(headers.get("content-length", 0)))
        if headers.get("connection") == "close":
            await self.close()

    async def read_until(self, separator: bytes) -> bytes:
        data: bytes = await self.reader.readuntil(separator)  # IncompleteReadError is EOFError
        return data[: -len(separator)]

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


class Soak:
    def __init__(self, args: Any, server_pid: int, port: int) -> None:
        self.args = args
        self.server_pid = server_pid
        self.port = port
        self.outcomes: list[Outcome] = []
        self.killed: set[int] = set()
        self.kills = 0
        self.details: list[str] = []
        self.stop_at = time.monotonic() + args.seconds

    async def one(self, conn: Connection, kind: str) -> None:
        import asyncio

        outcome = Outcome(kind)
        self.outcomes.append(outcome)
        try:
            async with asyncio.timeout(self.args.client_timeout):
                await conn.get(PATHS[kind], outcome)
        except TimeoutError:
            outcome.hung = True
            await conn.close()
        except (OSError, EOFError, ValueError) as exc:  # reset, cut off, garbled
            outcome.error = type(exc).__name__
            await conn.close()

    async def client_loop(self, rng: Any) -> None:
        kinds = [k for k, _ in KINDS]
        weights = [w for _, w in KINDS]
        conn = Connection(self.port)
        try:
            while time.monotonic() < self.stop_at:
                await self.one(conn, rng.choices(kinds, weights)[0])
        finally:
            await conn.close()

    async def killer(self, rng: Any) -> None:
        import asyncio
        import signal

        while time.monotonic() < self.stop_at:
            await asyncio.sleep(rng.uniform(0.1, 0.5))
            workers = sorted(children_of(self.server_pid))
            if not workers:
                continue
            victim = rng.choice(workers)
            self.killed.add(victim)  # before the kill: a racing request is attributed
            try:
                os.kill(victim, signal.SIGKILL)
                self.kills += 1
            except ProcessLookupError:
                pass

    async def run(self) -> None:
        import asyncio
        import random

        rng = random.Random(self.args.seed)
        loops = [
            self.client_loop(random.Random(rng.random())) for _ in range(self.args.concurrency)
        ]
        await asyncio.gather(self.killer(rng), *loops)

    def verdict(self, workers_end: int, clean_exit: bool) -> tuple[str, bool]:
        count: dict[str, int] = {}
        for outcome in self.outcomes:
            key = "hung" if outcome.hung else outcome.error or str(outcome.status)
            count[key] = count.get(key, 0) + 1
        crashes = sum(1 for o in self.outcomes if o.kind == "crash")
        errors = [o for o in self.outcomes if o.error and not o.hung]
        explained = [o for o in errors if o.kind == "crash" or o.pid in self.killed]
        unexplained = len(errors) - len(explained)
        unexpected = {
            key: n for key, n in count.items() if key.isdigit() and key not in EXPECTED_STATUS
        }
        failed = []
        if count.get("hung"):
            failed.append(f"{count['hung']} hung")
        if unexplained:
            failed.append(f"{unexplained} unexplained connection errors")
            self.details += [
                f"unexplained: {o.kind} request, status={o.status} pid={o.pid} {o.error}"
                for o in errors
                if o not in explained
            ]
        if unexpected:
            failed.append(
                "unexpected status " + ", ".join(f"{k} x{n}" for k, n in unexpected.items())
            )
        if count.get("502", 0) > self.kills + crashes:
            failed.append("more 502s than kills plus crash requests")
        if workers_end != self.args.workers:
            failed.append("pool not back to full size")
        if not clean_exit:
            failed.append("server did not exit cleanly")
        statuses = " ".join(f"{key}={n}" for key, n in sorted(count.items()) if key.isdigit())
        summary = (
            f"requests={len(self.outcomes)} {statuses} conn_errors={len(errors)} "
            f"(explained={len(explained)} unexplained={unexplained}) "
            f"hung={count.get('hung', 0)} kills={self.kills} crash_requests={crashes} "
            f"workers_end={workers_end}/{self.args.workers} clean_exit={clean_exit} "
            f"rps={len(self.outcomes) / self.args.seconds:.0f} "
            + ("PASS" if not failed else "FAIL: " + "; ".join(failed))
        )
        return summary, not failed


def wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def accepting(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def drive(args: Any) -> int:
    import asyncio
    import signal
    import subprocess
    import tempfile

    port = free_port()
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--serve",
        "--port",
        str(port),
        "--workers",
        str(args.workers),
    ]
    with tempfile.NamedTemporaryFile(prefix="wsgipool-soak-", suffix=".log", delete=False) as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        if not wait_until(lambda: accepting(port), 30) or server.poll() is not None:
            print(f"server did not start; log: {log.name}", file=sys.stderr)
            return 2
        soak = Soak(args, server.pid, port)
        asyncio.run(soak.run())
        wait_until(lambda: settled(server.pid, port, args.workers), args.settle)
        workers = children_of(server.pid)
        pool_state = pool_view(port)
        server.send_signal(signal.SIGTERM)
        try:
            # uvicorn re-raises the SIGTERM it caught once it has shut down
            clean_exit = server.wait(30) in (0, -signal.SIGTERM)
        except subprocess.TimeoutExpired:
            clean_exit = False
        clean_exit = clean_exit and wait_until(lambda: not any(map(alive, workers)), 10)
        summary, ok = soak.verdict(len(workers), clean_exit)
        print(summary, flush=True)
        if not ok:
            for line in soak.details:
                print(line, file=sys.stderr)
            print(f"worker processes: {sorted(workers)}; pool: {pool_state}", file=sys.stderr)
            print(f"server log: {log.name}", file=sys.stderr)
        else:
            os.unlink(log.name)
        return 0 if ok else 1
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def settled(server_pid: int, port: int, workers: int) -> bool:
    """Exactly ``workers`` worker processes, all idle in the pool, none starting."""
    import json

    if len(children_of(server_pid)) != workers:
        return False
    try:
        state = json.loads(pool_view(port))
    except ValueError:
        return False
    return len(state["idle"]) == workers and not state["starting"]


def pool_view(port: int) -> str:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/pool", timeout=5) as response:
            return str(response.read().decode())
    except OSError as exc:
        return f"unavailable ({exc})"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load phase")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent clients")
    parser.add_argument("--workers", type=int, default=4, help="worker processes")
    parser.add_argument(
        "--client-timeout",
        type=float,
        default=35.0,
        help="seconds without an answer before a request counts as hung",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=15.0,
        help="seconds the pool gets to be back to full size after the load",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.port, args.workers)
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
