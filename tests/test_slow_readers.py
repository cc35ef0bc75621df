"""Responses are taken from the worker as fast as the app writes them and sent at the
client's pace: a reader that takes nothing does not hold a worker, is cut by the pace
rules, and leaves no spool file or descriptor behind; many slow clients at once cost the
front a bounded amount of memory.

Real uvicorn servers (h11 and httptools) on 127.0.0.1, raw sockets with a small receive
buffer for the readers that read nothing.
"""

from __future__ import annotations

import re
import socket
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from apps import open_files_in, pattern
from support import MiB, PeakRSS, Reader, connect, hypercorn_thread, open_fds, wait_for
from wsgipool import WsgiToAsgi

CUT = "the client reads too slowly"
#: The two ways to be too slow: no progress for client_timeout, or an average below
#: min_client_rate once client_rate_grace has passed (the gap rule kept out of reach).
RULES = {
    "idle": {"client_timeout": 3, "min_client_rate": 0},
    "rate": {"client_timeout": 30, "min_client_rate": 8 * MiB, "client_rate_grace": 3},
}


def spool_files(directory: Path) -> list[str]:
    """This process's descriptors of files in ``directory`` (unlinked ones included)."""
    return open_files_in(str(directory))


def request(sock: socket.socket, target: str, method: str = "GET", body: bytes = b"") -> None:
    head = f"{method} {target} HTTP/1.1\r\nHost: t\r\n"
    if method == "POST":
        head += f"Content-Length: {16 * MiB}\r\n"
    sock.sendall(head.encode() + b"\r\n" + body)


@pytest.mark.parametrize("http", ["h11", "httptools"])
@pytest.mark.parametrize("rule", RULES)
def test_a_reader_that_reads_nothing_does_not_hold_the_worker(
    serve: Any, http: str, rule: str, tmp_path: Path, caplog: Any
) -> None:
    app = WsgiToAsgi("apps:download", workers=1, buffer_dir=str(tmp_path), **RULES[rule])
    with serve(app, http=http) as server:
        before = open_fds()
        slow = connect(server.port, rcvbuf=4096)
        request(slow, "/?mib=16")
        reader = Reader(slow)
        status, headers = reader.head()  # the app has begun; nothing more is read
        assert status == 200
        # The only worker serves a plain GET once the app is done: the front holds the
        # rest of the response for the slow reader, in a file with no name.
        assert httpx.get(server.url + "/?mib=0", timeout=10).status_code == 200
        wait_for(lambda: len(app.stats().idle) == 1, what="the worker idle")
        assert [w.requests for w in app.stats().workers] == [2]
        assert spool_files(tmp_path)
        assert CUT not in caplog.text  # ... while the slow reader is still connected
        wait_for(lambda: CUT in caplog.text, timeout=15, what="the slow reader cut off")
        wait_for(lambda: not spool_files(tmp_path), what="the spool file closed")
        assert list(tmp_path.iterdir()) == []
        # What reached the socket's buffers before the cut, then the end of the connection.
        assert len(reader.body(headers)) < 16 * MiB
        assert reader.closed()
        slow.close()
        wait_for(lambda: open_fds() <= before, what="every descriptor closed")
        assert app.stats().restarts == {}


def bytes_read() -> int:
    """Bytes this process (the front, and the test's clients) has read by any call."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_the_worker_writes_a_stalled_readers_response_to_disk_itself(
    serve: Any, http: str, tmp_path: Path
) -> None:
    # Once the spool is on disk the worker writes the rest into the spool's file: the
    # front reads the bytes only when the client takes them, and every byte arrives.
    options = {"buffer_dir": str(tmp_path), "metrics": True, "status": True}
    app = WsgiToAsgi("apps:random_download", workers=1, **options)
    with serve(app, http=http) as server, connect(server.port, rcvbuf=4096) as slow:
        before = bytes_read()
        request(slow, "/?mib=32&seed=5")
        reader = Reader(slow)
        assert reader.head()[0] == 200
        wait_for(lambda: len(app.stats().idle) == 1, what="the worker free")
        read = bytes_read() - before
        assert read < 12 * MiB, f"the front read {read / MiB:.1f} MiB of a 32 MiB response"
        metrics = httpx.get(server.url + "/-/metrics", timeout=10).text
        on_disk = [line for line in metrics.splitlines() if 'where="disk"' in line]
        assert on_disk
        assert float(on_disk[0].split()[-1]) >= 16 * MiB
        page = httpx.get(server.url + "/-/status", timeout=10).text
        shown = re.search(r"([\d.]+) MiB in memory, ([\d.]+) MiB on disk", page)
        assert shown is not None
        assert float(shown[1]) <= 2.5  # 1 MiB held, and up to 1 MiB about to be written
        assert float(shown[2]) >= 16
        body = bytearray(reader.buffer)  # the rest with a linear read: 4 KiB per recv
        while len(body) < 32 * MiB and (piece := slow.recv(MiB)):
            body += piece
        assert body == b"".join(pattern(32 * MiB, seed=5))
        wait_for(lambda: not spool_files(tmp_path), what="the spool files closed")
    assert app.stats().restarts == {}


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_a_slow_reader_of_an_endless_response_is_cut_and_the_app_stopped(
    serve: Any, http: str, tmp_path: Path, caplog: Any
) -> None:
    # Past max_response_buffer the worker waits for the client; once the client is cut,
    # the app is told to stop as for a disconnect, and its close() runs.
    marker = tmp_path / "closed"
    options = {"max_response_buffer": "1MiB", "client_timeout": 1, "min_client_rate": 0}
    app = WsgiToAsgi("apps:endless_blocks", workers=1, **options)
    with serve(app, http=http) as server:
        before = {w.pid for w in app.stats().workers}
        with connect(server.port, rcvbuf=4096) as slow:
            request(slow, f"/?marker={marker}")
            assert Reader(slow).head()[0] == 200
            wait_for(marker.exists, what="the app's close() called")
        assert marker.read_text() == "closed"
        assert CUT in caplog.text
        wait_for(lambda: len(app.stats().idle) == 1, what="the worker idle")
        assert {w.pid for w in app.stats().workers} == before
    assert app.stats().restarts == {}


@pytest.mark.parametrize("host", ["uvicorn", "hypercorn-trio"])
def test_a_slow_producer_read_promptly_is_not_cut(serve: Any, host: str) -> None:
    # 50 bytes/s of events, below min_client_rate: the app is slow, not the client, so
    # the time the front waits on the app does not count against the client's rate.
    app = WsgiToAsgi("apps:slow_stream", workers=1, min_client_rate=100, client_rate_grace=0.5)
    with ExitStack() as stack:
        if host == "uvicorn":
            url = stack.enter_context(serve(app, http="h11")).url
        else:
            url = stack.enter_context(hypercorn_thread(app, "trio"))
        response = httpx.get(url, params={"n": 12, "every": 0.2}, timeout=10)
        assert response.content == b"".join(b"data: %02d\n\n" % i for i in range(12))
    assert app.stats().restarts == {}


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_many_slow_clients_cost_the_front_bounded_memory(
    serve: Any, http: str, tmp_path: Path
) -> None:
    app = WsgiToAsgi("apps:download", workers=2, buffer_dir=str(tmp_path), client_timeout=10)
    with serve(app, http=http) as server, ExitStack() as stack:
        assert httpx.get(server.url + "/?mib=1", timeout=10).status_code == 200
        with PeakRSS() as peak:
            for _ in range(20):  # 2 MiB of a 16 MiB body each, then nothing
                uploader = stack.enter_context(connect(server.port))
                request(uploader, "/", "POST", b"u" * (2 * MiB))
            for _ in range(20):
                reader = stack.enter_context(connect(server.port, rcvbuf=4096))
                request(reader, "/?mib=16")
            wait_for(
                lambda: sum(w.requests for w in app.stats().idle) == 21,
                timeout=15,
                what="all 20 responses taken from the workers",
            )
            assert httpx.get(server.url + "/?mib=0", timeout=10).status_code == 200
        assert spool_files(tmp_path)  # the responses wait on disk, not in memory
    assert peak.growth < 64 * MiB, f"the front grew by {peak.growth / MiB:.1f} MiB"
    assert app.stats().restarts == {}


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_a_hundred_slow_readers_cost_the_front_under_64_mib(
    serve: Any, http: str, tmp_path: Path
) -> None:
    # With the default memory budget (32 MiB), what each slow reader holds beyond it must
    # stay small: not the first pipe read of its response, not a large coalesced message.
    app = WsgiToAsgi("apps:download", workers=2, buffer_dir=str(tmp_path), client_timeout=20)
    with serve(app, http=http) as server, ExitStack() as stack:
        assert httpx.get(server.url + "/?mib=1", timeout=10).status_code == 200
        with PeakRSS() as peak:
            for _ in range(100):
                reader = stack.enter_context(connect(server.port, rcvbuf=4096))
                request(reader, "/?mib=4")
            wait_for(
                lambda: sum(w.requests for w in app.stats().idle) == 101,
                timeout=60,
                what="all 100 responses taken from the workers",
            )
            assert httpx.get(server.url + "/?mib=0", timeout=10).status_code == 200
    assert peak.growth < 64 * MiB, f"the front grew by {peak.growth / MiB:.1f} MiB"
    assert app.stats().restarts == {}
