"""What ``wsgipool serve`` tells operators: JSON logs, access lines, request ids, the admin
listener and the utilization metric, through a real front, real workers and HTTP."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import httpx

from support import Front, wait_for
from wsgipool._serve.admin import HEAD_TIMEOUT as ADMIN_HEAD_TIMEOUT
from wsgipool._serve.admin import MAX_CONNECTIONS as ADMIN_CONNECTIONS

ACCESS_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(m)s %(U)s %(q)s %({x-request-id}o)s %({x-custom}i)s'


def test_json_logs_access_lines_and_request_ids(front: Callable[..., Front]) -> None:
    server = front(
        "apps:logs_sleeps", "-w", "1", "--log-format", "json", "--access-log",
        "--access-log-format", ACCESS_FORMAT,
    ).ready()  # fmt: skip
    given = httpx.get(
        server.url + "/given?a=1", headers={"X-Request-ID": "abc-123", "X-Custom": "yes"}
    )
    assert given.headers["x-request-id"] == "abc-123"  # echoed
    unsafe = httpx.get(server.url + "/unsafe", headers={"X-Request-ID": "no good <script>"})
    made = unsafe.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)  # replaced, never passed on
    assert httpx.get(server.url + "/fails?raise=1").status_code == 500
    assert server.stop() == 0

    lines = server.output().splitlines()
    entries = [json.loads(line) for line in lines]  # every line, front and workers
    for entry in entries:
        assert {"time", "level", "logger", "pid", "message"} <= entry.keys()
    front_pid = server.proc.pid
    pids = {entry["pid"] for entry in entries}
    assert front_pid in pids
    assert len(pids) == 2  # the front and its worker

    access = [e for e in entries if e["logger"] == "wsgipool.access"]
    first = next(e for e in access if e["path"] == "/given")
    assert first["message"] == (
        '127.0.0.1 "GET /given?a=1 HTTP/1.1" 200 11 GET /given a=1 abc-123 yes'
    )
    assert (first["query"], first["status"], first["bytes"]) == ("a=1", 200, 11)
    assert (first["request_id"], first["client"]) == ("abc-123", "127.0.0.1")
    assert first["duration"] > 0
    assert next(e for e in access if e["path"] == "/unsafe")["request_id"] == made

    # The app's own lines, written by the worker, carry the id of their request.
    app_lines = {e["message"]: e for e in entries if e["logger"] == "myapp"}
    assert app_lines["serving /given"]["request_id"] == "abc-123"
    assert app_lines["serving /given"]["pid"] != front_pid
    assert app_lines["serving /unsafe"]["request_id"] == made
    # The app's exception: one entry, its traceback inside, with its request's id.
    failure = next(e for e in entries if "Exception in WSGI app" in e["message"])
    assert "a failure of the app\nover two lines" in failure["message"]
    fails = next(e for e in access if e["path"] == "/fails")
    assert failure["request_id"] == fails["request_id"]


def test_the_admin_listener_alone_shows_the_inside(
    front: Callable[..., Front], tmp_path: Path
) -> None:
    sock = tmp_path / "admin.sock"
    server = front(
        "apps:logs_sleeps", "-w", "1", "--status", "--metrics", "--admin-bind", f"unix:{sock}"
    ).ready()
    for page in ("/-/status", "/-/metrics"):
        assert server.get(page).text == f"app: {page}"  # the app's, not ours
    for probe in ("/-/readyz", "/-/healthz"):
        assert server.get(probe).json() == {"status": "ok"}  # no pids, no errors
    transport = httpx.HTTPTransport(uds=str(sock))
    with httpx.Client(transport=transport, base_url="http://admin", timeout=30) as admin:
        assert "<table" in admin.get("/-/status").text
        assert "wsgipool_workers_max 1.0" in admin.get("/-/metrics").text
        assert admin.get("/-/readyz").json()["workers"] == 1
        assert admin.get("/elsewhere").status_code == 404
        # Silent connections past the listener's bound are dropped at once; the bound
        # frees as they go.
        with contextlib.ExitStack() as stack:
            for _ in range(ADMIN_CONNECTIONS):
                silent = stack.enter_context(socket.socket(socket.AF_UNIX))
                silent.connect(str(sock))
            extra = stack.enter_context(socket.socket(socket.AF_UNIX))
            extra.connect(str(sock))
            extra.settimeout(ADMIN_HEAD_TIMEOUT / 2)  # dropped, not timed out as silent
            assert extra.recv(1) == b""  # closed: over the bound
        wait_for(lambda: answers(admin), what="the admin listener after the silent ones left")


def answers(client: httpx.Client) -> bool:
    try:
        return client.get("/-/readyz").status_code == 200
    except httpx.TransportError:
        return False


def metric(server: Front, name: str) -> float:
    for line in server.admin("/-/metrics").text.splitlines():
        found, _, value = line.partition(" ")
        if found == name:
            return float(value)
    raise AssertionError(f"no {name}")


def test_utilization_rises_while_a_worker_is_busy(front: Callable[..., Front]) -> None:
    server = front("apps:logs_sleeps", "-w", "2", "--metrics", "--no-access-log").ready()
    assert metric(server, "wsgipool_utilization") == 0.0
    assert metric(server, "wsgipool_worker_busy_seconds_total") == 0.0
    slow = threading.Thread(target=lambda: server.get("/slow?s=1.5"))
    slow.start()
    wait_for(lambda: metric(server, "wsgipool_utilization") > 0, what="utilization above 0")
    slow.join(30)
    # The lease lasted at least the app's sleep, out of two workers' capacity.
    assert metric(server, "wsgipool_worker_busy_seconds_total") >= 1.5
    assert 0 < metric(server, "wsgipool_utilization") <= 0.5


def test_log_config_file_shapes_the_fronts_lines(
    front: Callable[..., Front], tmp_path: Path
) -> None:
    out = tmp_path / "front.log"
    config = {
        "version": 1,
        "formatters": {"plain": {"format": "%(request_id)s|%(name)s|%(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(out),
                              "formatter": "plain"}},
        "root": {"handlers": ["file"], "level": "INFO"},
    }  # fmt: skip
    (tmp_path / "logging.json").write_text(json.dumps(config))
    server = front(
        "apps:logs_sleeps", "-w", "1", "--log-config", str(tmp_path / "logging.json"),
        "--access-log-format", "%(m)s %(U)s %(s)s",
    ).ready()  # fmt: skip
    httpx.get(server.url + "/configured", headers={"X-Request-ID": "cfg-1"})
    assert server.stop() == 0
    lines = out.read_text().splitlines()
    assert "None|wsgipool.pool|worker 1 started" in "\n".join(lines)
    assert "cfg-1|wsgipool.access|GET /configured 200" in lines


def test_a_workers_exit_is_not_logged_under_the_next_requests_id(
    front: Callable[..., Front],
) -> None:
    """A worker that crashed is reaped when the next request is dispatched; its exit line
    belongs to no request, so it must not carry that request's id."""
    server = front("wsgipool.demo:app", "-w", "1", "--log-format", "json").ready()
    ids = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for n in range(3):
            assert client.get("/crash").status_code == 502
            ids.append(f"next-{n}")
            answer = client.get("/", headers={"X-Request-ID": ids[-1]})
            assert answer.status_code == 200
    server.stop()
    exits = [json.loads(line) for line in server.output().splitlines()
             if '"message": "worker 1' in line and "exited" in line]  # fmt: skip
    assert exits, server.output()
    for entry in exits:
        assert entry.get("request_id") not in ids, entry
