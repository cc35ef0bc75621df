"""Where a stuck request is stuck: the stacks of a worker past its timeout (in Python and
in C calls), a soft timeout the app itself sees, slow requests, what busy workers do now,
and why a worker died. Real workers, a real server on loopback, the logs as they come."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import debug_apps
from support import ServerProcess, free_port, python_env, wait_for
from wsgipool import WsgiToAsgi
from wsgipool._pool import deaths


def frame_line(function: Any, *offsets: int) -> str:
    """A pattern of faulthandler's line for the frame of ``function`` at one of
    ``offsets`` lines in."""
    code = function.__code__
    lines = "|".join(str(code.co_firstlineno + offset) for offset in offsets)
    return rf'File "{re.escape(code.co_filename)}", line ({lines}) in {code.co_name}\n'


def offset_of(function: Any, text: str) -> int:
    """How many lines into ``function`` the first line holding ``text`` is."""
    lines = inspect.getsource(function).splitlines()
    return next(n for n, line in enumerate(lines) if text in line)


def entries(caplog: pytest.LogCaptureFixture, pattern: str) -> list[str]:
    found = [r.getMessage() for r in caplog.records if r.name.startswith("wsgipool")]
    return [text for text in found if re.search(pattern, text)]


def metric(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{name}{{{labels}}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


TESTS = Path(__file__).parent


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServerProcess]:
    """``wsgipool serve`` of the stuck apps, one worker, with slow-request logs at 0.2 s."""
    port, admin = free_port(), free_port()
    argv = ["wsgipool", "serve", "debug_apps:app", "-w", "1", "-b", f"127.0.0.1:{port}",
            "--status", "--health", "--admin-bind", f"127.0.0.1:{admin}",
            "--slow-request", "0.2", "--graceful-timeout", "0.5"]  # fmt: skip
    log, admin_url = tmp_path / "server.log", f"http://127.0.0.1:{admin}"
    server = ServerProcess(argv, log, port, TESTS, python_env(TESTS), admin_url)
    yield server.ready()
    server.stop()


STUCK_AT = {
    "/python": frame_line(debug_apps.spin_in_python, 1, 2),  # while True: pass
    "/sleep": frame_line(debug_apps.sleep_in_c, 1),
    "/recv": frame_line(debug_apps.read_a_silent_socket, 2),
    "/lock": frame_line(debug_apps.wait_on_a_lock, 3),
    "/gil": frame_line(debug_apps.hold_the_gil_in_c, 1),
}


def test_a_timed_out_worker_logs_where_it_was_stuck(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wsgipool")
    app = WsgiToAsgi("debug_apps:app", workers=1, timeout=0.5, metrics=True)
    with serve(app) as server, server.client() as client:
        for path, where in STUCK_AT.items():
            response = client.get(path, params={"id": "7"})
            assert response.status_code == 504
            [entry] = entries(caplog, rf"timeout during GET {path}\?id=7 ")
            first, _, stacks = entry.partition("\n")
            assert re.search(r"worker 1 \(pid \d+\) .*; it ran 0\.\d+s", first), first
            assert re.search(where, stacks + "\n"), entry
            assert "debug_apps.py" in stacks.splitlines()[-1]  # ends at the app's first frame
            wait_for(lambda: len(app.stats().idle) == 1)
        scraped = client.get("/-/metrics").text
    assert metric(scraped, "wsgipool_stack_dumps_total", 'reason="timeout"') == len(STUCK_AT)
    assert app.stats().restarts == {"timeout": len(STUCK_AT)}


def test_an_app_exception_is_logged_with_its_query_from_the_apps_frames(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = WsgiToAsgi("apps:fail", workers=1, app_errors="respond")
    with serve(app) as server, server.client() as client:
        assert client.get("/", params={"how": "raise", "id": "7"}).status_code == 500
    [entry] = entries(caplog, r"Exception in WSGI app")
    assert entry.startswith("Exception in WSGI app for GET /?how=raise&id=7\n"), entry
    frames = re.findall(r'File "([^"]+)", line \d+, in (\w+)', entry)
    assert frames[0][1] == "fail", entry
    assert frames[0][0].endswith("apps.py"), entry


def test_the_soft_timeout_lets_djangos_logging_record_where_the_view_was(
    serve: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    log_file = tmp_path / "django.log"
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "djsite.settings_logfile")
    monkeypatch.setenv("DJSITE_LOG", str(log_file))
    app = WsgiToAsgi("djsite.wsgi:application", workers=1, timeout=0.5, timeout_grace=5)
    with serve(app) as server, server.client() as client:
        assert client.get("/hang", params={"s": "60"}).status_code == 504
        wait_for(lambda: len(app.stats().idle) == 1)
        assert client.get("/hang", params={"s": "0"}).text == "woke up"
    logged = log_file.read_text()
    assert "Internal Server Error: /hang" in logged, logged
    assert "wsgipool.RequestTimeout: the request ran past its timeout" in logged, logged
    assert re.search(r'urls\.py", line \d+, in hang\n', logged), logged
    [entry] = entries(caplog, r"timeout during GET /hang\?s=60 ")
    assert "interrupted with RequestTimeout, the app stopped within 5s" in entry, entry
    assert app.stats().events == {("stacks", "timeout"): 1, ("interrupts", "stopped"): 1}


def test_an_interrupt_the_app_lets_out_ends_the_log_entry_of_the_timeout(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = WsgiToAsgi("debug_apps:app", workers=1, timeout=0.5, timeout_grace=2)
    with serve(app) as server, server.client() as client:
        assert client.get("/sleep").status_code == 504  # the app lets RequestTimeout out
        wait_for(lambda: len(app.stats().idle) == 1)
    [entry] = entries(caplog, r"timeout during GET /sleep ")
    assert "the app stopped within 2s" in entry, entry
    raised = entry.partition("\nthen Exception in WSGI app for GET /sleep\n")[2]
    assert re.search(r'debug_apps\.py", line \d+, in sleep_in_c\n', raised), entry
    assert raised.endswith("wsgipool.RequestTimeout: the request ran past its timeout"), entry
    assert app.stats().events[("interrupts", "stopped")] == 1


def test_an_app_that_ignores_the_interrupt_is_killed_after_the_grace(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = WsgiToAsgi("debug_apps:app", workers=1, timeout=0.5, timeout_grace=0.3)
    with serve(app) as server, server.client() as client:
        assert client.get("/stubborn").status_code == 504
        wait_for(lambda: len(app.stats().idle) == 1)
    [entry] = entries(caplog, r"timeout during GET /stubborn ")
    assert "the app did not stop within 0.3s" in entry, entry
    assert re.search(frame_line(debug_apps.ignore_interrupts, 3), entry + "\n"), entry
    assert app.stats().restarts == {"timeout": 1}
    assert app.stats().events[("interrupts", "killed")] == 1


def test_slow_requests_are_logged_once_and_go_on_and_busy_workers_are_shown(
    served: ServerProcess,
) -> None:
    with httpx.Client(base_url=served.url, timeout=30) as client:
        response = client.get("/nap", params={"s": "0.6"})
        assert (response.status_code, response.text) == (200, "done")
        slow = re.findall(
            r"slow request: worker 1 \(pid \d+\) running GET /nap\?s=0\.6 for 0\.\ds, "
            r"still running; its stacks.*\n(?:    .*\n)+",
            served.output(),
        )
        assert len(slow) == 1, served.output()
        nap = frame_line(debug_apps.app, offset_of(debug_apps.app, "time.sleep(float("))
        assert re.search(nap, slow[0]), slow[0]

        stuck = threading.Thread(target=lambda: _get_quietly(served.url + "/sleep?id=7"))
        stuck.start()
        status = served.admin_url + "/-/status"
        wait_for(lambda: "GET /sleep?id=7" in client.get(status).text)
        page = client.get(status).text
        row = re.search(r'<tr><td>1</td>.*<code>GET /sleep\?id=7</code></td>'
                        r"<td>127\.0\.0\.1:\d+</td><td>\d+\.\ds</td></tr>", page)  # fmt: skip
        assert row, page

        os.kill(served.proc.pid, signal.SIGUSR1)
        asked = r"worker 1 \(pid \d+\) running GET /sleep\?id=7 for \d+\.\ds; its stacks"
        wait_for(lambda: re.search(asked, served.output()))
        entry = served.output().split(re.search(asked, served.output()).group(0))[1]
        assert re.search(STUCK_AT["/sleep"], entry), entry
    served.stop()
    stuck.join(30)


def _get_quietly(url: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(url, timeout=30)


def test_deaths_are_counted_by_cause_and_a_sigkill_from_outside_is_not_ours(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = WsgiToAsgi("apps:fail", workers=1, metrics=True)
    with serve(app) as server, server.client() as client:
        for how in ("sigkill", "segfault", "sigkill"):
            assert client.get("/", params={"how": how}).status_code == 502
            wait_for(lambda: len(app.stats().idle) == 1)
        wait_for(lambda: app.stats().events.get(("deaths", "sigkill")) == 2)
        scraped = client.get("/-/metrics").text
    assert metric(scraped, "wsgipool_worker_deaths_total", 'cause="sigkill"') == 2
    assert metric(scraped, "wsgipool_worker_deaths_total", 'cause="sigsegv"') == 1
    [first, _] = entries(caplog, r"crashed during GET /\?how=sigkill ")
    assert "(killed by SIGKILL" in first, first
    assert "sent by wsgipool" not in first, first  # the app killed itself


def test_a_worker_the_oom_killer_killed_is_said_to_be(
    serve: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A fake cgroup root whose count the app raises before it SIGKILLs itself, as the
    kernel's OOM killer would."""
    events = tmp_path / "cgroup" / "memory.events"
    events.parent.mkdir()
    events.write_text("oom 0\noom_kill 0\n")
    (tmp_path / "membership").write_text("0::/\n")
    monkeypatch.setattr(deaths, "CGROUP_ROOT", str(events.parent))
    monkeypatch.setattr(deaths, "MEMBERSHIP", str(tmp_path / "membership"))
    app = WsgiToAsgi("debug_apps:app", workers=1, metrics=True)
    with serve(app) as server, server.client() as client:
        assert client.get(f"/oom?events={events}").status_code == 502
        wait_for(lambda: app.stats().events.get(("deaths", "oom")) == 1)
        scraped = client.get("/-/metrics").text
    assert metric(scraped, "wsgipool_worker_deaths_total", 'cause="oom"') == 1
    [entry] = entries(caplog, r"crashed during GET /oom")
    assert "(killed by SIGKILL, by the kernel's OOM killer: out of memory)" in entry, entry
