"""Server hooks of a config file run in the process the docs say, with what they say."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from support import Front, wait_for

#: A hooks file: every hook writes its name, its process and what it was given.
HOOKS = """
import os

workers = {workers}
preload = {preload}

def _note(name, *what):
    with open({log!r}, "a") as f:
        f.write(" ".join([name, str(os.getpid()), *map(str, what)]) + "\\n")

def on_starting(server): _note("on_starting", server.app, server.config.workers)
def when_ready(server): _note("when_ready", len(server.stats().workers))
def on_reload(server): _note("on_reload")
def on_exit(server): _note("on_exit")
def child_exit(server, worker): _note("child_exit", worker.id, worker.pid)
def nworkers_changed(server, new, old): _note("nworkers_changed", new, old)
def post_worker_init(worker): _note("post_worker_init", worker.id, worker.pid)
def pre_request(worker, environ): _note("pre_request", environ["PATH_INFO"])
def post_request(worker, environ, status): _note("post_request", status)
def worker_exit(worker): _note("worker_exit", worker.id)

_note("loaded")
"""


def lines(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def pids_of(log: Path, name: str) -> set[int]:
    return {int(fields[1]) for fields in lines(log) if fields[0] == name}


def hooks_file(tmp_path: Path, workers: int, preload: bool, extra: str = "") -> tuple[Path, Path]:
    log = tmp_path / "hooks.log"
    conf = tmp_path / "wsgipool.conf.py"
    conf.write_text(HOOKS.format(workers=workers, preload=preload, log=str(log)) + extra)
    return conf, log


@pytest.mark.parametrize("preload", [False, True], ids=["spawned", "preload"])
def test_every_hook_runs_in_its_process(
    front: Callable[..., Front], tmp_path: Path, preload: bool
) -> None:
    conf, log = hooks_file(tmp_path, 3, preload)
    server = front("-c", str(conf), "apps:pid").ready()
    front_pid = server.proc.pid
    workers = pids_of(log, "post_worker_init")
    assert len(workers) == 3
    assert front_pid not in workers
    served = {int(server.get("/hello").text) for _ in range(3)}
    assert served <= workers
    wait_for(lambda: len(pids_of(log, "post_request")) >= 1, what="post_request")
    assert pids_of(log, "pre_request") == served
    assert {f[2] for f in lines(log) if f[0] == "pre_request"} == {"/hello"}
    assert {f[2] for f in lines(log) if f[0] == "post_request"} == {"200"}

    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: ["nworkers_changed", str(front_pid), "3", "2"] in lines(log), 30,
             "the pool to notice the loss and replace it")  # fmt: skip
    wait_for(lambda: len(pids_of(log, "post_worker_init")) == 4, 30, "a replacement")
    exited = [f for f in lines(log) if f[0] == "child_exit"]
    assert exited[0][1] == str(front_pid)
    assert exited[0][3] == str(victim)
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: pids_of(log, "on_reload"), 30, "on_reload")
    assert server.stop() == 0

    by_name: dict[str, set[int]] = {}
    for fields in lines(log):
        by_name.setdefault(fields[0], set()).add(int(fields[1]))
    for name in ("on_starting", "when_ready", "on_reload", "on_exit", "child_exit",
                 "nworkers_changed"):  # fmt: skip
        assert by_name[name] == {front_pid}, name
    everyone = by_name["post_worker_init"]
    for name in ("pre_request", "post_request", "worker_exit"):
        assert by_name[name] <= everyone, name
        assert front_pid not in by_name[name], name
    assert by_name["worker_exit"] - {victim}  # the ones stopped at the end said goodbye
    assert ["on_starting", str(front_pid), "apps:pid", "3"] in lines(log)
    assert ["when_ready", str(front_pid), "3"] in lines(log)
    assert lines(log)[-1][0] == "on_exit"
    # The front runs the file once, for its settings and its hooks.
    assert sum(fields[:2] == ["loaded", str(front_pid)] for fields in lines(log)) == 1
    assert "Traceback" not in server.output()


def test_a_failing_hook_is_logged_and_a_failing_post_worker_init_fails_the_start(
    front: Callable[..., Front], tmp_path: Path
) -> None:
    conf, _log = hooks_file(
        tmp_path, 1, False, "\ndef pre_request(worker, environ):\n    raise KeyError('pre')\n"
    )
    server = front("-c", str(conf), "apps:pid").ready()
    assert server.get().status_code == 200  # the request is served all the same
    wait_for(lambda: "KeyError: 'pre'" in server.output(), what="the hook's traceback")
    assert "the pre_request hook failed" in server.output()
    assert server.stop() == 0

    conf.write_text(conf.read_text() + "\ndef post_worker_init(worker):\n    1 / 0\n")
    broken = front("-c", str(conf), "apps:pid")
    assert broken.proc.wait(60) == 3  # like an app that fails to import
    output = broken.output()
    assert "post_worker_init failed: ZeroDivisionError" in output
    assert "1 / 0" in output  # with its traceback
