"""``preload=True``: a template imports the app once and forks the workers."""

from __future__ import annotations

import os
import signal
from typing import Any

from support import pid_alive, wait_for
from wsgipool import WsgiToAsgi


def stamp(client: Any) -> tuple[str, int, int]:
    imported, pid, ppid = client.get("/").text.split()
    return imported, int(pid), int(ppid)


def test_workers_are_forked_from_one_import(serve: Any) -> None:
    app = WsgiToAsgi("apps:import_stamp", workers=2, preload=True)
    with serve(app) as server, server.client() as client:
        template = app.stats().template_pid
        assert template is not None
        seen = {stamp(client) for _ in range(10)}
        assert {ppid for _, _, ppid in seen} == {template}  # children of the template
        assert len({imported for imported, _, _ in seen}) == 1  # imported once, before forks
        assert os.getpid() not in {pid for _, pid, _ in seen}


def test_crashed_forked_worker_is_replaced(serve: Any) -> None:
    app = WsgiToAsgi("apps:import_stamp", workers=1, preload=True)
    with serve(app) as server, server.client() as client:
        _, pid, _ = stamp(client)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid))
        _, new_pid, _ = stamp(client)
        assert new_pid != pid


def test_reload_starts_a_new_template(serve: Any) -> None:
    app = WsgiToAsgi("apps:import_stamp", workers=2, preload=True)

    async def router(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/reload":
            await app.reload()
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body"})
        else:
            await app(scope, receive, send)

    with serve(router) as server, server.client() as client:
        old_template = app.stats().template_pid
        assert old_template is not None
        before = stamp(client)[0]
        assert client.post("/reload").status_code == 204
        after = {stamp(client) for _ in range(6)}
        new_template = app.stats().template_pid
        assert new_template is not None
        assert new_template != old_template
        assert {ppid for _, _, ppid in after} == {new_template}
        assert {imported for imported, _, _ in after} != {before}
        wait_for(lambda: not pid_alive(old_template))  # the supervisor lets it go


def test_no_processes_left_after_shutdown(serve: Any) -> None:
    app = WsgiToAsgi("apps:import_stamp", workers=2, preload=True)
    with serve(app) as server, server.client() as client:
        pids = {stamp(client)[1] for _ in range(4)}
        template = app.stats().template_pid
        assert template is not None
    for pid in {*pids, template}:
        wait_for(lambda pid=pid: not pid_alive(pid))
