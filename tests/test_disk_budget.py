"""The front-wide budget of bytes on disk: slow readers of large responses cannot fill
the disk; when it is spent the client furthest behind is cut off (with one counted
warning, no error), and a client that keeps up is served in full.

A real uvicorn server on 127.0.0.1, raw sockets with a small receive buffer for the
readers that read nothing, httpx for the one that keeps up.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from support import Front, MiB, Reader, connect, wait_for
from wsgipool import WsgiToAsgi

BUDGET = 32 * MiB
#: Larger than the budget, but not by so much that a client slowed by a loaded machine
#: falls a whole budget behind its worker (it would then be the one furthest behind).
FAST = 40 * MiB


def test_the_disk_budget_cuts_the_slow_readers_not_the_fast_one(
    serve: Any, tmp_path: Path, caplog: Any
) -> None:
    app = WsgiToAsgi(
        "apps:download", workers=2, buffer_dir=str(tmp_path), buffer_disk=BUDGET,
        buffer_memory=MiB,
    )  # fmt: skip
    budget = app.budget
    assert budget.disk_limit == BUDGET
    peak = 0

    def on_disk() -> int:
        nonlocal peak
        peak = max(peak, budget.on_disk + budget.reserved)
        return budget.on_disk

    with serve(app) as server, ExitStack() as stack:
        readers = []
        for _ in range(3):  # each wants 16 MiB held: together more than the budget
            sock = stack.enter_context(connect(server.port, rcvbuf=4096))
            sock.sendall(b"GET /?mib=16 HTTP/1.1\r\nHost: t\r\n\r\n")
            reader = Reader(sock)
            assert reader.head()[0] == 200
            readers.append(reader)
        wait_for(lambda: app.refusals.connections.get("disk budget", 0) >= 1,
                 what="a slow reader cut for the disk budget")  # fmt: skip
        assert on_disk() <= BUDGET
        # A client that reads as fast as it can gets a response larger than the budget.
        received = others = 0
        with httpx.stream("GET", server.url + f"/?mib={FAST // MiB}", timeout=30) as response:
            assert response.status_code == 200
            for block in response.iter_bytes():
                received += len(block)
                others += len(block) - block.count(b"x")
                on_disk()
        assert (received, others) == (FAST, 0)
        assert peak <= BUDGET
        # The slow readers paid; with them gone, nothing is left on disk.
        assert 1 <= app.refusals.connections["disk budget"] <= len(readers)
        stack.close()
        wait_for(lambda: budget.on_disk == budget.reserved == 0, what="the spools freed")
    assert "disk budget is spent" in caplog.text  # a warning, counted
    assert "cut off" not in caplog.text  # ... not an error of the front's per connection


def test_wsgipool_serve_cuts_for_the_disk_budget_quietly(tmp_path: Path) -> None:
    """One warning with counts for the clients cut, no error per connection."""
    spool = tmp_path / "spool"
    spool.mkdir()
    server = Front(
        tmp_path, "apps:download", "-w", "1", "--buffer-dir", str(spool), "--buffer-disk",
        "8MiB", "--buffer-memory", "1MiB", "--no-access-log", "--metrics", "--status",
    ).ready()  # fmt: skip
    try:
        with ExitStack() as stack:
            for _ in range(4):
                sock = stack.enter_context(connect(server.port, rcvbuf=4096))
                sock.sendall(b"GET /?mib=16 HTTP/1.1\r\nHost: t\r\n\r\n")
                assert Reader(sock).head()[0] == 200
            wait_for(lambda: server.output().count("disk budget is spent") >= 1,
                     what="a slow reader cut")  # fmt: skip
            assert server.get("/?mib=1").status_code == 200
            metrics = server.admin("/-/metrics").text
            assert 'wsgipool_buffer_limit_bytes{where="disk"} 8.388608e+06' in metrics
            assert 'wsgipool_connections_closed_total{reason="disk budget"}' in metrics
            assert "8.0 MiB on disk)" in server.admin("/-/status").text
    finally:
        server.stop()
    output = server.output()
    assert "ASGI callable" not in output
    assert "ERROR" not in output
