"""``wsgipool serve``: flags and environment, then real fronts, in a thread and as processes."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import wsgipool
from support import Front, children_of, free_port, wait_for
from support import pid_alive as alive
from wsgipool import Config
from wsgipool._cli.main import Serving, main
from wsgipool._cli.parser import parse
from wsgipool._config import env_name

TESTS = Path(__file__).parent


def title(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode().strip()


# -- flags and environment ---------------------------------------------------------------


def test_help_lists_every_option_with_default_and_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for field in dataclasses.fields(Config):
        assert "--" + field.name.replace("_", "-") in text, field.name
        assert f"[{env_name(field.name)}]" in text, field.name
    for flag in ("-w N, --workers N", "-b BIND, --bind BIND", "--access-log, --no-access-log"):
        assert flag in text
    assert (
        "--graceful-timeout SECONDS seconds in-flight requests get to finish at shutdown; "
        "default: 30 [WSGIPOOL_GRACEFUL_TIMEOUT]" in text
    )
    assert "--health, --no-health" in text
    assert "default: on [WSGIPOOL_HEALTH]" in text


def test_environment_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSGIPOOL_WORKERS", "3")
    monkeypatch.setenv("WSGIPOOL_MAX_RSS", "512MiB")
    monkeypatch.setenv("WSGIPOOL_TIMEOUT", "off")
    monkeypatch.setenv("WSGIPOOL_PRELOAD", "true")
    monkeypatch.setenv("WSGIPOOL_BIND", "0.0.0.0:8000, unix:/run/app.sock")
    monkeypatch.setenv("WSGIPOOL_PROXY_HEADERS", "yes")
    args = parse(["serve", "m:app"])
    assert (args.workers, args.max_rss, args.timeout, args.preload) == (3, 512 << 20, None, True)
    assert args.bind == ("0.0.0.0:8000", "unix:/run/app.sock")
    assert args.proxy_headers is True
    assert args.health is True
    args = parse(["serve", "m:app", "-w", "2", "--no-preload", "-b", "127.0.0.1:1", "-b", ":2"])
    assert (args.workers, args.preload, args.bind) == (2, False, ("127.0.0.1:1", ":2"))
    assert parse(["serve", "m:app", "--no-health"]).health is False


def test_usage_errors_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([]) == 2
    assert main(["serve", "m:app", "--workers", "many"]) == 2
    assert main(["serve", "m:app", "--bind", "nowhere"]) == 2
    assert "not HOST:PORT or unix:PATH: 'nowhere'" in capsys.readouterr().err
    assert main(["serve", "not an import string"]) == 2
    assert "app must look like" in capsys.readouterr().err
    assert main(["serve", "m:app", "--log-level", "loud"]) == 2
    levels = "critical, error, warning, info, debug"
    assert f"--log-level must be one of {levels}, got 'loud'" in capsys.readouterr().err
    monkeypatch.setenv("WSGIPOOL_MAX_REQUESTS", "lots")
    assert main(["serve", "m:app"]) == 2
    assert "WSGIPOOL_MAX_REQUESTS must be a whole number, got 'lots'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["-w", "0"], "--workers must be at least 1, got 0"),
        (["--workers", "many"], "--workers must be a whole number, got 'many'"),
        (["--timeout", "0"], "--timeout must be more than 0, or none, got 0.0"),
        (["--timeout", "soon"], "--timeout must be a number of seconds or none, got 'soon'"),
        (["--backlog", "-1"], "--backlog must be at least 0, got -1"),
        (["--max-rss", "lots"], "--max-rss must be a size such as 512MiB, 2GB or 1048576"),
        (["-w", "2", "--max-workers", "1"], "--max-workers must be at least workers (2), got 1"),
        (["--metrics-path", "metrics"], "--metrics-path must be a path starting with '/'"),
        (["--status"], "served on a listener of their own: add --admin-bind 127.0.0.1:PORT"),
        (["--admin-bind", "nowhere"], "--admin-bind: not HOST:PORT or unix:PATH"),
        (["--log-format", "xml"], "--log-format must be text or json, got 'xml'"),
        (["--request-id-header", "X Id"], "--request-id-header must be a header name"),
        (["--log-config", "/no/such/file.json"], "--log-config: no such file"),
        (["--access-log-format", "%(h)d"], "--access-log-format '%(h)d': "),
    ],
)
def test_value_errors_name_the_flag_and_the_valid_range(
    capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    assert main(["serve", "m:app", *argv]) == 2
    err = capsys.readouterr().err
    assert said in err
    assert "invalid" not in err
    assert "int()" not in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"wsgipool {wsgipool.__version__}\n"


def test_unknown_flag_after_serve_shows_serves_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "m:app", "--wrokers", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: wsgipool serve ")
    assert "--max-requests N" in err  # serve's own flags are listed
    assert "wsgipool serve: error: unrecognized arguments: --wrokers 2" in err


# -- a front in this process ------------------------------------------------------------


def test_serving_in_a_thread_on_tcp_and_unix_sockets(tmp_path: Path) -> None:
    path = tmp_path / "front.sock"
    serving = Serving(
        parse(["serve", "apps:pid", "-w", "1", "-b", "127.0.0.1:0", "-b", f"unix:{path}"])
    )
    url = serving.listeners[0].url
    assert url.startswith("http://127.0.0.1:")
    assert serving.listeners[1].url == f"unix:{path}"
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(serving.run()))
    thread.start()
    try:
        wait_for(lambda: serving.server.started, what="uvicorn")
        with httpx.Client(base_url=url, timeout=30) as client:
            pid = int(client.get("/").text)
            assert pid != os.getpid()
            probe = client.get("/-/readyz")  # health is on under `wsgipool serve`
            assert probe.status_code == 200
            assert probe.json() == {"status": "ok"}  # no details on the app's port
            assert client.get("/-/status").text == str(pid)  # off: the app answers
        transport = httpx.HTTPTransport(uds=str(path))
        with httpx.Client(transport=transport, base_url="http://front", timeout=30) as client:
            assert client.get("/").text == str(pid)
    finally:
        serving.server.should_exit = True
        thread.join(30)
    assert codes == [0]
    assert not path.exists()
    wait_for(lambda: not alive(pid), what="the worker to exit")


def test_port_in_use_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "apps:hello", "-b", f"127.0.0.1:{port}"]) == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in capsys.readouterr().err


# -- `python -m wsgipool serve` ---------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_and_exits_0(front: Callable[..., Front], sig: int) -> None:
    server = front("apps:fail", "-w", "2", "--graceful-timeout", "20", "--status").ready()
    assert title(server.proc.pid) == "wsgipool: front [apps:fail]"
    slow: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: slow.append(server.get("/?how=sleep&s=1")))
    thread.start()
    wait_for(lambda: server.admin("/-/readyz").json()["busy"] == 1, what="a busy worker")
    busy_pids = sorted(children_of(server.proc.pid))
    assert {title(p) for p in busy_pids} == {
        "wsgipool: worker 1 [apps:fail]",
        "wsgipool: worker 2 [apps:fail]",
    }
    assert server.stop(sig) == 0
    thread.join(30)
    assert slow[0].status_code == 200  # the in-flight request finished
    output = server.output()
    banner = f"serving apps:fail on {server.url} with 2 workers"
    banner += f" (wsgipool {wsgipool.__version__}, uvicorn"
    assert banner in output
    assert "wsgipool.pool: worker 1 started (pid" in output
    assert "Traceback" not in output
    wait_for(lambda: not any(alive(pid) for pid in busy_pids), what="the workers to exit")


def test_app_that_fails_to_import_exits_3_with_its_error(front: Callable[..., Front]) -> None:
    server = front("no_such_module_here:app", "-w", "1")
    assert server.proc.wait(30) == 3
    output = server.output()
    assert "ModuleNotFoundError: No module named 'no_such_module_here'" in output
    assert "could not start no_such_module_here:app" in output


def test_sighup_replaces_the_workers(front: Callable[..., Front]) -> None:
    server = front("apps:pid", "-w", "1", "--no-access-log").ready()
    before = int(server.get().text)
    server.proc.send_signal(signal.SIGHUP)
    answers: list[int] = []

    def replaced() -> bool:
        response = server.get()
        assert response.status_code == 200  # no request fails during the restart
        answers.append(int(response.text))
        return answers[-1] != before

    wait_for(replaced, what="a new worker")
    assert server.stop() == 0
    output = server.output()
    assert "rolling restart of the workers (SIGHUP)" in output
    assert '"GET / HTTP/1.1" 200' not in output  # --no-access-log


def test_reload_restarts_workers_when_a_source_file_changes(
    front: Callable[..., Front], tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    module = project / "versioned.py"
    source = (
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'VERSION']\n"
    )
    module.write_text(source.replace("VERSION", "one"))
    server = front("versioned:app", "-w", "1", "--reload", cwd=project).ready()
    assert server.get().text == "one"
    module.write_text(source.replace("VERSION", "two"))
    stamp = time.time() + 5  # a distinct mtime whatever the clock's granularity
    os.utime(module, (stamp, stamp))
    wait_for(lambda: server.get().text == "two", what="the new code to be served")
    assert server.stop() == 0
    assert "rolling restart of the workers (versioned.py changed)" in server.output()


def test_console_script_and_environment(front: Callable[..., Front], tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    env = {**os.environ, "WSGIPOOL_BIND": f"127.0.0.1:{port}", "WSGIPOOL_WORKERS": "2",
           "WSGIPOOL_ADMIN_BIND": f"127.0.0.1:{admin}"}  # fmt: skip
    script = Path(sys.executable).with_name("wsgipool")
    proc = subprocess.Popen(
        [str(script), "serve", "apps:hello", "--status"],
        cwd=TESTS, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert proc.poll() is None
            try:
                answer = httpx.get(f"http://127.0.0.1:{admin}/-/readyz", timeout=2).json()
                return bool(answer["workers"] == 2)
            except httpx.TransportError:
                return False

        wait_for(ready, what="two workers")
        assert httpx.get(url + "/").text == "Hello, world!"
        assert "<table" in httpx.get(f"http://127.0.0.1:{admin}/-/status").text
        assert httpx.get(url + "/-/status").text == "Hello, world!"  # not on the app's port
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_with_plain_uvicorn_no_httptools_no_uvloop(
    front: Callable[..., Front], tmp_path: Path
) -> None:
    # `pip install wsgipool uvicorn`: h11 and asyncio only. httptools and uvloop are made
    # unimportable in the child, as if they were not installed.
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nsys.modules['httptools'] = None\nsys.modules['uvloop'] = None\n"
    )
    path = os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])
    server = front("apps:loose_headers", "-w", "1", PYTHONPATH=path).ready()
    response = server.get("/")
    assert response.status_code == 200
    assert response.headers["set-cookie"] == "csrftoken=abc; Path=/; SameSite=Lax"
    assert "httptools" not in server.output().split("serving", 1)[1].splitlines()[0]
