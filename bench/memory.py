"""Front memory through a large upload and a large download to a slow client.

    python bench/memory.py                  # 1 GiB each way, client reading 64 MiB/s
    python bench/memory.py --size-mib 256   # quicker

Serves ``bench.app:app`` through wsgipool under uvicorn (same settings as ``run.py``),
samples the front's resident memory every 10 ms, and prints how far it rose above its
level after warm-up, against the 50 MiB target. Both transfers use raw sockets on
loopback: the upload sends as fast as the server takes it, the download reads slowly
through a small receive buffer, so the front must hold back the worker rather than buffer
the response. Writes ``bench/results/memory.json``, which ``run.py``'s report includes.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procs import RESULTS, children, free_port, proc_status, serving  # noqa: E402
from bench.run import APP, CONTENDERS, server_command  # noqa: E402

MIB = 1024 * 1024
TARGET_MIB = 50.0


class Sampler(threading.Thread):
    """Largest VmRSS of one process since the last ``reset``."""

    def __init__(self, pid: int, every: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak = 0.0
        self.done = threading.Event()

    def reset(self) -> float:
        self.peak = proc_status(self.pid, "VmRSS")
        return self.peak

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.peak = max(self.peak, proc_status(self.pid, "VmRSS"))


def _connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    return sock


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"unexpected response: {head[:80]!r}")
    return head, rest


def upload(port: int, size: int) -> float:
    """POST ``size`` bytes to /upload as fast as the server reads them; seconds taken."""
    block = b"u" * (256 * 1024)
    began = time.monotonic()
    with _connect(port) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: bench\r\n"
            b"Content-Type: application/octet-stream\r\n"
            b"Content-Length: %d\r\n\r\n" % size
        )
        left = size
        while left:
            piece = block if left >= len(block) else block[:left]
            sock.sendall(piece)
            left -= len(piece)
        _, body = _read_head(sock)
        while not body:
            body = sock.recv(100)
    if int(body) != size:
        raise ConnectionError(f"the app read {int(body)} bytes of {size}")
    return time.monotonic() - began


def download(port: int, size: int, rate: float) -> float:
    """GET ``size`` bytes from /stream, reading at most ``rate`` bytes/s; seconds taken."""
    began = time.monotonic()
    with _connect(port, rcvbuf=64 * 1024) as sock:
        sock.sendall(b"GET /stream?mib=%d HTTP/1.1\r\nHost: bench\r\n\r\n" % (size // MIB))
        _, rest = _read_head(sock)
        got = len(rest)
        while got < size:
            chunk = sock.recv(min(64 * 1024, size - got))
            if not chunk:
                raise ConnectionError(f"connection closed after {got} bytes")
            got += len(chunk)
            ahead = got / rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
    return time.monotonic() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="upload and download size")
    parser.add_argument("--rate-mib", type=float, default=64.0, help="slow client's MiB/s")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    size = args.size_mib * MIB
    contender = next(c for c in CONTENDERS if c.name == "wsgipool")
    log = Path("/tmp") / "wsgipool-bench-memory.log"
    port = free_port()
    command = server_command(contender, port, args.workers, APP)
    with serving(command, port, log, {"BENCH_WORKERS": str(args.workers)}) as (pid, _):
        upload(port, 32 * MIB)  # warm up: buffers of both paths reach their working size
        download(port, 32 * MIB, rate=1e12)
        sampler = Sampler(pid)
        sampler.start()
        base = sampler.reset()
        up_seconds = upload(port, size)
        up_growth = sampler.peak - base
        base_down = sampler.reset()
        down_seconds = download(port, size, args.rate_mib * MIB)
        down_growth = sampler.peak - base_down
        sampler.done.set()
        workers = [proc_status(kid, "VmHWM") for kid in children(pid)]
        front_hwm = proc_status(pid, "VmHWM")
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "size_mib": args.size_mib,
        "client_mib_s": args.rate_mib,
        "front_rss_before_mib": round(base, 1),
        "upload_growth_mib": round(up_growth, 1),
        "upload_mb_s": round(size / up_seconds / 1e6),
        "download_growth_mib": round(down_growth, 1),
        "download_seconds": round(down_seconds, 1),
        "front_peak_mib": round(front_hwm, 1),
        "worker_peak_mib": round(max(workers, default=0.0), 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory.json").write_text(json.dumps(result, indent=1) + "\n")
    worst = max(up_growth, down_growth)
    print(f"front RSS before: {base:.1f} MiB")
    print(
        f"upload   {args.size_mib} MiB at {result['upload_mb_s']} MB/s: "
        f"front RSS +{up_growth:.1f} MiB"
    )
    print(
        f"download {args.size_mib} MiB to a {args.rate_mib:g} MiB/s client in "
        f"{down_seconds:.0f} s: front RSS +{down_growth:.1f} MiB"
    )
    print(
        f"largest growth {worst:.1f} MiB vs target < {TARGET_MIB:.0f} MiB: "
        + ("met" if worst < TARGET_MIB else "MISSED")
    )
    return 0 if worst < TARGET_MIB else 1


if __name__ == "__main__":
    sys.exit(main())
