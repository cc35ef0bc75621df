"""The worker-side spill (SPILL/SPILLED frames): a reader that stalls until the
worker is done, then reads everything; every byte must arrive, in order, and the front must
hold nothing afterwards (memory, disk, descriptors)."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from spill_apps import mixed
from support import MiB, connect, open_fds, wait_for
from test_slow_readers import bytes_read, spool_files
from wsgipool import WsgiToAsgi


def send_get(port: int, target: str) -> socket.socket:
    sock = connect(port, rcvbuf=4096, timeout=30)
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    return sock


def read_all(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = bytearray()
    while piece := sock.recv(MiB):
        data += piece
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        out, rest = bytearray(), memoryview(body)
        while True:
            end = bytes(rest[:20]).index(b"\r\n")
            size = int(bytes(rest[:end]).split(b";")[0], 16)
            out += rest[end + 2 : end + 2 + size]
            rest = rest[end + 2 + size + 2 :]
            if size == 0:
                break
        body = bytes(out)
    return int(lines[0].split()[1]), headers, body


def expected(mib: float, seed: int = 0, block: int = 65536) -> bytes:
    return b"".join(mixed(int(mib * MiB), seed, block))


def stalled_get(
    server: Any, app: WsgiToAsgi, target: str, tmp_path: Path
) -> tuple[int, dict[str, str], bytes, int]:
    """GET ``target`` with a reader that takes nothing until the worker is free; returns
    the response and how many bytes the front read before the client read (small: the
    worker spilled)."""
    before = bytes_read()
    sock = send_get(server.port, target)
    try:
        wait_for(
            lambda: (
                app.stats().workers
                and app.stats().workers[0].requests >= 1
                and len(app.stats().idle) == len(app.stats().workers)
            ),
            timeout=30,
            what="the response taken from the worker",
        )
        files = bytes_read() - before  # what the front read meanwhile: little if spilled
        status, headers, body = read_all(sock)
    finally:
        sock.close()
    return status, headers, body, files


def settled(app: WsgiToAsgi, tmp_path: Path) -> None:
    wait_for(lambda: not spool_files(tmp_path), what="the spool files closed")
    wait_for(
        lambda: app.budget.used == 0 and app.budget.on_disk == 0,
        timeout=5,
        what=f"budget back to 0 (used={app.budget.used}, on_disk={app.budget.on_disk})",
    )


OPTIONS = {"workers": 1, "client_timeout": 30, "min_client_rate": 0}


def make_app(tmp_path: Path, **extra: Any) -> WsgiToAsgi:
    return WsgiToAsgi("spill_apps:spilling", buffer_dir=str(tmp_path), **{**OPTIONS, **extra})


@pytest.mark.parametrize(
    ("query", "mib"),
    [
        ("how=iter", 32),
        ("how=iter&empty=1", 16),
        ("how=write", 32),
        ("how=list", 24),
        ("how=file", 32),
        ("how=iter&block=20971520&mib=64", 64),  # chunks over MAX_CHUNK (16 MiB)
    ],
)
def test_every_byte_of_a_spilled_response_arrives_in_order(
    serve: Any, tmp_path: Path, query: str, mib: int
) -> None:
    app = make_app(tmp_path)
    block = 20971520 if "block=" in query else 65536
    with serve(app, http="h11") as server:
        status, _headers, body, files = stalled_get(server, app, f"/?mib={mib}&{query}", tmp_path)
        assert status == 200
        assert files < mib * MiB / 2, "the worker did not spill"
        assert len(body) == mib * MiB
        assert body == expected(mib, block=block)
        settled(app, tmp_path)
    assert app.stats().restarts == {}


def test_content_length_cut_while_spilling(serve: Any, tmp_path: Path) -> None:
    app = make_app(tmp_path)
    cut = 20 * MiB + 12345
    with serve(app, http="h11") as server:
        status, _headers, body, files = stalled_get(server, app, f"/?mib=32&cl={cut}", tmp_path)
        assert status == 200
        assert files < 16 * MiB
        assert body == expected(32)[:cut]
        settled(app, tmp_path)
    assert app.stats().restarts == {}


def delayed_get(server: Any, target: str, delay: float) -> tuple[int, dict[str, str], bytes]:
    sock = send_get(server.port, target)
    try:
        time.sleep(delay)
        return read_all(sock)
    finally:
        sock.close()


@pytest.mark.parametrize("cap", ["3MiB", "6MiB", "20MiB"])
def test_allowance_used_up_and_max_response_buffer_reached(
    serve: Any, tmp_path: Path, cap: str
) -> None:
    # The worker spills its allowance, then goes on through the pipe; past the cap the
    # front stops reading the worker until the client catches up.
    app = make_app(tmp_path, max_response_buffer=cap)
    with serve(app, http="h11") as server:
        status, _, body = delayed_get(server, "/?mib=48&seed=3", 1.5)
        assert status == 200
        assert body == expected(48, seed=3)
        settled(app, tmp_path)
        # the same worker serves the next request normally
        again = httpx.get(server.url + "/?mib=2&seed=4", timeout=10)
        assert again.content == expected(2, seed=4)
    assert app.stats().restarts == {}


def test_a_worker_killed_mid_spill(serve: Any, tmp_path: Path) -> None:
    app = make_app(tmp_path)
    with serve(app, http="h11") as server:
        before = open_fds()
        sock = send_get(server.port, "/?mib=32&kill_mib=20")
        try:
            wait_for(lambda: app.stats().restarts, timeout=15, what="the worker replaced")
            status, _, body = read_all(sock)
        finally:
            sock.close()
        assert status == 200
        assert 0 < len(body) <= 21 * MiB
        assert body == expected(32)[: len(body)]
        settled(app, tmp_path)
        wait_for(lambda: len(app.stats().idle) == 1, what="the replacement ready")
        # the replacement's two pipes are new; nothing else may be
        wait_for(
            lambda: len(open_fds() - before) <= 2,
            what=f"every descriptor closed: {described(open_fds() - before)}",
        )
        assert httpx.get(server.url + "/?mib=1", timeout=10).content == expected(1)


def described(fds: set[int]) -> list[str]:
    out = []
    for fd in fds:
        with contextlib.suppress(OSError):
            out.append(f"{fd}->{os.readlink(f'/proc/self/fd/{fd}')}")
    return out


def test_a_client_that_leaves_mid_spill(serve: Any, tmp_path: Path) -> None:
    marker = tmp_path.parent / f"{tmp_path.name}-closed"
    app = make_app(tmp_path, max_response_buffer="64MiB")
    with serve(app, http="h11") as server:
        before = open_fds()
        sock = send_get(server.port, f"/?mib=512&marker={marker}")
        wait_for(lambda: app.budget.on_disk > 8 * MiB, timeout=15, what="spilling")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        sock.close()  # RST
        wait_for(marker.exists, timeout=15, what="the app's close() called")
        wait_for(lambda: len(app.stats().idle) == 1, what="the worker idle")
        settled(app, tmp_path)
        wait_for(lambda: open_fds() <= before, what="every descriptor closed")
        assert worker_spill_fds_of(app, tmp_path) == []
        assert httpx.get(server.url + "/?mib=1", timeout=10).content == expected(1)
    assert app.stats().restarts == {}


def worker_spill_fds_of(app: WsgiToAsgi, tmp_path: Path) -> list[str]:
    """The worker processes' descriptors of files in tmp_path."""
    found = []
    for worker in app.stats().workers:
        for fd in os.listdir(f"/proc/{worker.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{worker.pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(str(tmp_path)):
                found.append(target)
    return found


@pytest.mark.parametrize("fsize", [3 * MiB + 1000, 8 * MiB])
def test_the_workers_spill_hits_a_full_disk(serve: Any, tmp_path: Path, fsize: int) -> None:
    # RLIMIT_FSIZE in the worker only: its pwrite fails past fsize (EFBIG, as ENOSPC would);
    # what did not fit goes through the pipe, into the front's own file.
    app = make_app(tmp_path)
    with serve(app, http="h11") as server:
        status, _, body, _ = stalled_get(server, app, f"/?mib=32&seed=7&fsize={fsize}", tmp_path)
        assert status == 200
        assert body == expected(32, seed=7)
        settled(app, tmp_path)
    assert app.stats().restarts == {}


def test_spilled_response_on_each_host(serve_each: Any, tmp_path: Path) -> None:
    app = make_app(tmp_path)
    with serve_each(app) as server:
        status, _, body, _read = stalled_get(server, app, "/?mib=32&seed=9", tmp_path)
        assert status == 200
        assert body == expected(32, seed=9)
        settled(app, tmp_path)
    assert app.stats().restarts == {}


@pytest.mark.parametrize("how", ["iter", "write", "list"])
def test_many_small_spilled_responses_in_a_row(
    serve: Any, tmp_path: Path, how: str, monkeypatch: Any
) -> None:
    # No memory budget: every response is on disk from its first chunk, so the front asks
    # for a spill at once, often just as the worker finishes: the SPILL may come late.
    asked = spills_counted(monkeypatch)
    app = make_app(tmp_path, buffer_memory=0, workers=2)
    with serve(app, http="h11") as server, httpx.Client(base_url=server.url, timeout=10) as c:
        for n in range(150):
            kib = 1024 + 64 * (1 + n % 31) + n
            block = 4096 * (1 + n % 5)
            r = c.get(
                "/",
                params={
                    "mib": kib / 1024,
                    "seed": n,
                    "block": block,
                    "how": how,
                    "empty": str(n % 2),
                },
            )
            assert r.status_code == 200, n
            assert r.content == expected(kib / 1024, seed=n, block=block), n
        settled(app, tmp_path)
        assert worker_spill_fds_of(app, tmp_path) == []
    assert asked[0] > 50, asked
    assert app.stats().restarts == {}


def spills_counted(monkeypatch: Any) -> list[int]:
    """How many times the front (in this process) sent a SPILL frame."""
    from wsgipool._front import relay as _relay

    asked = [0]
    original = _relay.Relay._ask_to_spill

    def ask(self: Any, spool: Any, cap: int) -> None:
        original(self, spool, cap)
        asked[0] += bool(self.r.spill)

    monkeypatch.setattr(_relay.Relay, "_ask_to_spill", ask)
    return asked


@contextlib.contextmanager
def front_files_limited(size: int) -> Iterator[None]:
    """This process's files (the front's spools) may not grow past ``size`` bytes: a
    full disk for the front only (the workers are already running, with no limit)."""
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)


@pytest.mark.parametrize(
    ("target", "when"),
    [
        # The app is done before the client reads: the own file's first chunks are
        # written when the client reaches them, and that write fails.
        ("/?mib=8&seed=11&pause=0.002", "worker done"),
        # The client reads while the app still produces: the worker must be kept.
        ("/?mib=16&seed=12&pause=0.004", "worker streaming"),
    ],
)
def test_a_full_disk_on_the_front_cuts_the_client_and_keeps_the_worker(
    serve: Any, tmp_path: Path, target: str, when: str
) -> None:
    # A SpoolError out of the drain cuts the client off (logged); the worker is kept and
    # what could not be read is off the on-disk count.
    app = make_app(tmp_path)
    with serve(app, http="h11") as server:
        assert httpx.get(server.url + "/?mib=0.1", timeout=10).status_code == 200
        with front_files_limited(32 * 1024), send_get(server.port, target) as sock:
            if when == "worker done":
                wait_for(
                    lambda: sum(w.requests for w in app.stats().idle) >= 2 or app.stats().restarts,
                    timeout=30,
                    what="the response taken",
                )
            else:
                wait_for(lambda: app.budget.on_disk > 0, timeout=10, what="on disk")
            with contextlib.suppress(OSError):
                read_all(sock)
        wait_for(lambda: not spool_files(tmp_path), what="the spool files closed")
        time.sleep(0.5)
        held = (app.budget.used, app.budget.on_disk)
    assert (held, app.stats().restarts) == ((0, 0), {})
