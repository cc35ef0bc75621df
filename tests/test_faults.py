"""Crashes, hangs and broken workers: the request in question fails cleanly, nothing else
(each through uvicorn on asyncio and hypercorn on trio)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import children_of, pid_alive, wait_for
from wsgipool import WsgiToAsgi


@pytest.mark.parametrize("how", ["sigkill", "exit", "segfault"])
def test_worker_death_before_headers_is_502_and_replaced(serve_each: Any, how: str) -> None:
    app = WsgiToAsgi("apps:fail", workers=2)
    with serve_each(app) as server, server.client() as client:
        before = {w.pid for w in app.stats().idle}
        response = client.get("/", params={"how": how})
        assert response.status_code == 502
        wait_for(lambda: len(app.stats().idle) == 2)
        after = {w.pid for w in app.stats().idle}
        assert len(before & after) == 1  # one replaced, the other untouched
        assert client.get("/", params={"how": "raise"}).status_code == 500
    assert app.stats().restarts == {"crashed": 1}


def test_worker_death_midway_cuts_response_off(serve_each: Any) -> None:
    app = WsgiToAsgi("apps:fail", workers=1)
    with serve_each(app) as server, server.client() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/", params={"how": "crash-midway"})
        assert client.get("/", params={"how": "raise"}).status_code == 500


def test_other_requests_untouched_while_workers_crash(serve_each: Any) -> None:
    crash = WsgiToAsgi("apps:fail", workers=1)
    hello = WsgiToAsgi("apps:hello", workers=1)

    async def router(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await lifespan_both(scope, receive, send)
        target = crash if scope["path"].startswith("/crash") else hello
        await target(scope, receive, send)

    async def lifespan_both(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await crash.start()
        await hello.start()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await crash.aclose()
        await hello.aclose()
        await send({"type": "lifespan.shutdown.complete"})

    statuses: list[int] = []
    with serve_each(router) as server:
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=server.url, timeout=10) as client:
                while not stop.is_set():
                    statuses.append(client.get("/").status_code)

        thread = threading.Thread(target=load)
        thread.start()
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(5):
                assert client.get("/crash", params={"how": "sigkill"}).status_code == 502
        stop.set()
        thread.join()
    assert statuses
    assert set(statuses) == {200}


@pytest.mark.parametrize("how", ["huge", "kind", "msgpack", "shape", "log", "headers"])
def test_malformed_frames_kill_only_that_worker(
    serve_each: Any, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = WsgiToAsgi("apps:corrupt", workers=2)
    with serve_each(app) as server, server.client() as client:
        before = {w.pid for w in app.stats().idle}
        assert client.get("/", params={"how": how}).status_code == 502
        wait_for(lambda: len(app.stats().idle) == 2, what="replacement idle")
        after = {w.pid for w in app.stats().idle}
        (killed,) = before - after
        wait_for(lambda: not pid_alive(killed))
        assert len(before & after) == 1  # the other worker was left alone
        for _ in range(2):
            response = client.get("/")
            assert (response.status_code, response.text) == (200, "fine")
    assert app.stats().restarts == {"protocol error": 1}
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("wsgipool")]
    assert any("protocol error" in line for line in logged), logged


def test_timeout_is_504_and_kills_the_process_group(serve_each: Any, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    app = WsgiToAsgi("apps:spawner", workers=1, timeout=1)
    with serve_each(app) as server, server.client() as client:
        worker_pid = app.stats().idle[0].pid
        started = time.monotonic()
        response = client.get("/", params={"pidfile": str(pidfile)})
        assert response.status_code == 504
        assert time.monotonic() - started < 10
        grandchild = int(pidfile.read_text())
        wait_for(lambda: not pid_alive(worker_pid) and not pid_alive(grandchild))
        wait_for(lambda: len(app.stats().idle) == 1)
    assert app.stats().restarts == {"timeout": 1}


def test_no_workers_left_after_shutdown(serve_each: Any) -> None:
    app = WsgiToAsgi("apps:hello", workers=3)
    with serve_each(app) as server, server.client() as client:
        assert client.get("/").status_code == 200
        pids = {w.pid for w in app.stats().idle} | {w.pid for w in app.stats().busy}
        assert len(pids) == 3
    for pid in pids:
        assert not pid_alive(pid)
    assert not (children_of(os.getpid()) & pids)


def test_front_sigkill_leaves_no_orphans(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "front.py"
    script.write_text(
        "import anyio, sys\n"
        "from asgi_helpers import call_asgi\n"
        "from wsgipool import WsgiToAsgi\n"
        "async def main():\n"
        "    app = WsgiToAsgi('apps:pid', workers=2)\n"
        "    await app.start()\n"
        "    print(' '.join(str(w.pid) for w in app.stats().idle), flush=True)\n"
        "    await anyio.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    anyio.run(main)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    front = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, env=env, cwd=Path(__file__).parent
    )
    assert front.stdout is not None
    with front.stdout:
        pids = [int(p) for p in front.stdout.readline().split()]
    assert len(pids) == 2
    assert all(pid_alive(p) for p in pids)
    front.send_signal(signal.SIGKILL)
    front.wait(10)
    wait_for(lambda: not any(pid_alive(p) for p in pids))
