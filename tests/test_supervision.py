"""Supervision through a real server (uvicorn on asyncio, hypercorn on trio) and real
worker processes: timeouts, recycling, respawn and back-off, overload, body limits, abort
grace, privilege drop, shutdown, rolling restart and dynamic pool size.

Workers are observed by pid: ``apps:supervised`` answers ``os.getpid()`` (body and
``X-Worker-Pid``), and ``pool.restarts`` counts replacements by reason.
"""

from __future__ import annotations

import grp
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn

from asgi_helpers import call_asgi, http_scope
from support import children_of, pid_alive
from support import wait_for as eventually
from wsgipool import AppLoadError, WsgiToAsgi
from wsgipool._pool.supervisor import supervise

APP = "apps:supervised"


# -- helpers ------------------------------------------------------------------------


def pids(app: WsgiToAsgi) -> set[int]:
    """Pids of the workers in service (idle or busy)."""
    return {w.pid for w in list(app.stats().idle)} | {w.pid for w in list(app.stats().busy)}


def idle_pids(app: WsgiToAsgi) -> set[int]:
    return {w.pid for w in list(app.stats().idle)}


def write_module(directory: Path, name: str, source: str) -> str:
    """Write ``name.py`` into ``directory`` (already on sys.path); return ``"name:app"``."""
    (directory / f"{name}.py").write_text(source)
    return f"{name}:app"


# A module that counts its imports in COUNTER and refuses to load while FLAG exists.
FLAKY_MODULE = """\
import os
with open({counter!r}, "a") as f:
    f.write("%r\\n" % __import__("time").monotonic())
if os.path.exists({flag!r}):
    raise RuntimeError("flaky app refuses to load: " + {flag!r})

def app(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
"""


def flaky_app(directory: Path, name: str) -> tuple[str, Path, Path]:
    """``(ref, flag, counter)``: the app fails to import while ``flag`` exists."""
    flag, counter = directory / f"{name}.flag", directory / f"{name}.count"
    ref = write_module(directory, name, FLAKY_MODULE.format(counter=str(counter), flag=str(flag)))
    return ref, flag, counter


def imports(counter: Path) -> list[float]:
    """When the flaky module was imported (one line per worker that tried)."""
    if not counter.exists():
        return []
    return [float(line) for line in counter.read_text().split()]


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path (the workers get the front's sys.path) for app modules."""
    directory = tmp_path / "modules"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    return directory


class Load:
    """Client threads sending GETs until stopped; ``results`` holds (status or error, pid)."""

    def __init__(self, url: str, path: str = "/", clients: int = 2, count: int | None = None):
        self.url, self.path, self.count = url, path, count
        self.results: list[tuple[int | str, int | None]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        done = 0
        with httpx.Client(base_url=self.url, timeout=20) as client:
            while not self.stop.is_set() and (self.count is None or done < self.count):
                done += 1
                try:
                    response = client.get(self.path)
                except httpx.HTTPError as exc:
                    self.results.append((type(exc).__name__, None))
                    continue
                pid = response.headers.get("x-worker-pid")
                self.results.append((response.status_code, int(pid) if pid else None))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(30)

    @property
    def statuses(self) -> Counter[int | str]:
        return Counter(status for status, _ in self.results)


class Background:
    """Run one blocking call in a thread; ``result()`` joins it and returns its value."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self._value: Any = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._value = call()
            except BaseException as exc:
                self._error = exc

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def done(self) -> bool:
        return not self.thread.is_alive()

    def result(self, timeout: float = 30) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the call did not return in time"
        if self._error is not None:
            raise self._error
        return self._value


def get(url: str, timeout: float = 20, **params: Any) -> httpx.Response:
    """One GET on a fresh connection (safe from any thread)."""
    with httpx.Client(timeout=timeout) as client:
        return client.get(url, params=params)


async def plain(send: Any, status: int, text: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": text.encode()})


def with_reload_route(app: WsgiToAsgi) -> Any:
    """``app`` plus ``POST /-/reload-test``, which runs ``app.reload()`` in the server's loop."""

    async def wrapper(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/-/reload-test":
            try:
                await app.reload()
            except AppLoadError as exc:
                await plain(send, 500, f"AppLoadError: {exc}")
            else:
                await plain(send, 200, "reloaded")
            return
        await app(scope, receive, send)

    return wrapper


# -- timeout --------------------------------------------------------------------------


def test_timeout_cuts_off_a_started_response_and_spares_other_workers(serve_each: Any) -> None:
    app = WsgiToAsgi(APP, workers=2, timeout=1)
    with serve_each(app) as server, server.client() as client:
        with client.stream("GET", "/hang") as response:
            assert response.status_code == 200
            hung = int(response.headers["x-worker-pid"])
            chunks = response.iter_raw()
            assert next(chunks) == b"first\n"
            other = get(server.url, s=0.2)  # meanwhile, on the other worker
            started = time.monotonic()
            with pytest.raises(httpx.RemoteProtocolError):
                for _ in chunks:
                    pass
        assert time.monotonic() - started < 5
        assert other.status_code == 200
        assert int(other.text) != hung
        eventually(lambda: not pid_alive(hung), what="hung worker killed")
        eventually(lambda: len(app.stats().idle) == 2, what="replacement ready")
        assert hung not in pids(app)
        assert int(other.text) in pids(app)  # the other worker was left alone
    assert app.stats().restarts == {"timeout": 1}


# -- recycling ------------------------------------------------------------------------


def test_max_requests_recycles_with_jitter_and_no_failed_request(serve_each: Any) -> None:
    app = WsgiToAsgi(APP, workers=2, max_requests=3, max_requests_jitter=2)
    with serve_each(app) as server:
        with Load(server.url, "/?s=0.01", clients=3, count=15) as load:
            load.join()
        assert load.statuses == {200: 45}
        served = Counter(pid for _, pid in load.results)
        retired = set(served) - pids(app)
        assert len(retired) >= 6
        for pid in retired:
            assert 3 <= served[pid] <= 5, served
        eventually(lambda: not any(pid_alive(pid) for pid in retired), what="retired exit")
    assert app.stats().restarts == {"max_requests": len(retired)}


def test_replacement_starts_while_the_last_request_runs(serve_each: Any) -> None:
    app = WsgiToAsgi(APP, workers=1, max_requests=2)
    with serve_each(app) as server, server.client() as client:
        first = int(client.get("/").text)
        last = Background(lambda: get(server.url, s=1))
        eventually(lambda: app.stats().busy, what="last request running")
        # A replacement is up and idle while the old worker still serves its last request.
        eventually(lambda: idle_pids(app) - {first}, what="replacement ready")
        assert not last.done()
        response = last.result()
        assert (response.status_code, int(response.text)) == (200, first)
        assert int(client.get("/").text) != first
        eventually(lambda: not pid_alive(first))
    assert app.stats().restarts == {"max_requests": 1}


def test_max_lifetime_retires_busy_and_idle_workers(serve_each: Any) -> None:
    app = WsgiToAsgi(APP, workers=1, max_lifetime=0.5, max_lifetime_jitter=0.2)
    with serve_each(app) as server, server.client() as client:
        seen: list[int] = []
        deadline = time.monotonic() + 15
        while len(set(seen)) < 3 and time.monotonic() < deadline:
            response = client.get("/", params={"s": 0.05})
            assert response.status_code == 200
            seen.append(int(response.text))
        assert len(set(seen)) >= 3
        assert seen == sorted(seen, key=seen.index)  # each worker's requests are contiguous
        # Without requests, the supervisor retires an idle worker when its time is up.
        current = pids(app)
        eventually(lambda: idle_pids(app) and not idle_pids(app) & current, what="idle retire")
        assert client.get("/").status_code == 200
    assert set(app.stats().restarts) == {"max_lifetime"}
    assert app.stats().restarts["max_lifetime"] >= 3


def test_max_rss_retires_a_worker_that_grew(serve_each: Any) -> None:
    app = WsgiToAsgi(APP, workers=1, max_rss="96MiB")
    with serve_each(app) as server, server.client() as client:
        first = int(client.get("/", params={"mib": 4}).text)
        assert int(client.get("/").text) == first  # still under the limit
        response = client.get("/", params={"mib": 128})
        assert (response.status_code, int(response.text)) == (200, first)
        eventually(lambda: not pid_alive(first), what="grown worker exits")
        assert int(client.get("/").text) != first
    assert app.stats().restarts == {"max_rss": 1}


# -- respawn and back-off -------------------------------------------------------------


def test_dead_worker_is_replaced_at_once(serve_each: Any) -> None:
    app = WsgiToAsgi(APP, workers=2)
    with serve_each(app) as server, server.client() as client:
        victim, survivor = sorted(idle_pids(app))
        os.kill(victim, signal.SIGKILL)
        started = time.monotonic()
        eventually(lambda: len(idle_pids(app) - {victim}) == 2, what="replacement")
        assert time.monotonic() - started < 3
        assert survivor in idle_pids(app)
        assert client.get("/").status_code == 200
    assert app.stats().restarts == {"died": 1}


# uvicorn only: it asserts how uvicorn reports a failed lifespan start-up (exit code 3).
def test_import_error_fails_startup_with_the_apps_own_error(module_dir: Path) -> None:
    ref, flag, counter = flaky_app(module_dir, "broken_at_startup")
    flag.touch()
    app = WsgiToAsgi(ref, workers=2)
    messages: list[dict[str, Any]] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        async def record(message: dict[str, Any]) -> None:
            messages.append(message)
            await send(message)

        await app(scope, receive, record if scope["type"] == "lifespan" else send)

    server = uvicorn.Server(uvicorn.Config(recording, lifespan="on", log_level="critical"))
    exit_codes: list[object] = []

    def run(sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except SystemExit as exc:  # how uvicorn reports a failed start-up
            exit_codes.append(exc.code)

    started = time.monotonic()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        thread = threading.Thread(target=run, args=(sock,))
        thread.start()
        thread.join(30)
    assert not thread.is_alive()
    assert time.monotonic() - started < 15
    assert exit_codes == [3]
    assert not server.started
    assert [m["type"] for m in messages] == ["lifespan.startup.failed"]
    assert "flaky app refuses to load" in messages[0]["message"]
    assert len(imports(counter)) == 2  # one try per worker: no retry storm at start-up


@pytest.mark.anyio
async def test_crash_loop_backs_off_exponentially_without_lifespan(
    module_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ref, flag, counter = flaky_app(module_dir, "crash_loop")
    flag.touch()
    app = WsgiToAsgi(ref, workers=1)
    statuses = []
    retry_after = set()
    try:
        with anyio.fail_after(15):
            begin = time.monotonic()
            while time.monotonic() - begin < 2:
                start = (await call_asgi(app))[0]
                statuses.append(start["status"])
                retry_after.add(dict(start["headers"]).get(b"retry-after"))
    finally:
        await app.aclose()
    tries = imports(counter)
    # Unavailable, not broken: 503 at once while backing off, with when to come back.
    assert set(statuses) == {503}
    assert None not in retry_after
    assert all(int(value) >= 1 for value in retry_after)
    assert 2 <= len(tries) <= 8, f"{len(tries)} workers started in 2 s"
    assert app.stats().failures == len(tries)
    assert "flaky app refuses to load" in (app.stats().last_error or "")
    # The delay the pool chose doubles after each failure (its own figures, not the
    # wall clock, which a loaded machine stretches by the time an import takes).
    delays = [float(d) for d in re.findall(r"next attempt in ([\d.]+)s", caplog.text)]
    assert len(delays) == len(tries), caplog.text
    assert all(b == 2 * a for a, b in itertools.pairwise(delays)), delays
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert all(gap >= delay for gap, delay in zip(gaps, delays[:-1], strict=True)), (gaps, delays)
    assert app.stats().backoff_until > tries[-1]


@pytest.mark.anyio
async def test_concurrent_requests_during_a_crash_loop_are_answered_promptly(
    module_dir: Path,
) -> None:
    # Requests queued behind a start-up that fails must not wait out queue_timeout (30 s)
    # for a worker that is not coming.
    ref, flag, _ = flaky_app(module_dir, "crash_loop_concurrent")
    flag.touch()
    app = WsgiToAsgi(ref, workers=1)
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await call_asgi(app))[0]["status"])

    try:
        with anyio.fail_after(6):
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(one)
    finally:
        await app.aclose()
    assert len(statuses) == 4
    assert all(status >= 500 for status in statuses)


SLOW_START_MODULE = """\
import os, time
with open({marker!r}, "w") as f:
    f.write(str(os.getpid()))
deadline = time.monotonic() + 10
while not os.path.exists({go!r}) and time.monotonic() < deadline:
    time.sleep(0.01)

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
"""


@pytest.mark.anyio
async def test_worker_killed_while_starting_is_not_blamed_on_the_app(module_dir: Path) -> None:
    # The app is fine; its worker was killed from outside while importing it. That is
    # not "the app could not be loaded" (500).
    marker, go = module_dir / "starting.pid", module_dir / "go"
    ref = write_module(
        module_dir, "slow_start", SLOW_START_MODULE.format(marker=str(marker), go=str(go))
    )
    app = WsgiToAsgi(ref, workers=1)  # no lifespan: the request starts the worker
    answer: list[dict[str, Any]] = []

    async def request() -> None:
        answer.extend(await call_asgi(app))

    try:
        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                tg.start_soon(request)
                while not marker.exists() or not marker.read_text():
                    await anyio.sleep(0.01)
                os.kill(int(marker.read_text()), signal.SIGKILL)
                go.touch()
    finally:
        await app.aclose()
    assert answer[0]["status"] in (200, 502, 503), answer[1]["body"]


def test_supervisor_backs_off_then_recovers(serve_each: Any, module_dir: Path) -> None:
    ref, flag, counter = flaky_app(module_dir, "relapse")
    app = WsgiToAsgi(ref, workers=1)
    with serve_each(app) as server, server.client() as client:
        (first,) = idle_pids(app)
        flag.touch()
        os.kill(first, signal.SIGKILL)
        killed = time.monotonic()
        eventually(lambda: app.stats().failures >= 4, what="four failed restarts")
        elapsed = time.monotonic() - killed
        tries = imports(counter)[1:]  # the first import was the healthy start
        assert len(tries) <= app.stats().failures + 1
        assert elapsed >= 0.1 + 0.2 + 0.4  # the first three back-off delays
        assert app.stats().backoff_until > time.monotonic() - 0.5
        flag.unlink()
        eventually(lambda: len(app.stats().idle) == 1, timeout=15, what="recovery")
        assert app.stats().failures == 0
        response = client.get("/")
        assert response.status_code == 200
        assert int(response.text) != first
    assert app.stats().restarts == {"died": 1}


@pytest.mark.anyio
async def test_supervisor_and_a_request_together_start_no_more_than_max_workers() -> None:
    # The supervisor decides a worker is missing and schedules its start; a request that
    # runs before that start begins sees the same gap and starts one too.
    app = WsgiToAsgi(APP, workers=1)
    front = os.getpid()
    before = children_of(front)
    try:
        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                tg.start_soon(supervise, app.pool)
                await anyio.sleep(0)  # the supervisor's first look at the pool
                assert (await call_asgi(app))[0]["status"] == 200
                while app.stats().starting:
                    await anyio.sleep(0.01)
                started = children_of(front) - before
                tg.cancel_scope.cancel()
    finally:
        await app.aclose()
    assert len(started) == 1, f"{len(started)} workers for workers=1, max_workers=1"


# -- overload -------------------------------------------------------------------------


def test_full_backlog_is_503_at_once_without_touching_a_worker(serve_each: Any) -> None:
    app = WsgiToAsgi(APP, workers=1, backlog=1)
    with serve_each(app) as server, server.client() as client:
        busy = Background(lambda: get(server.url, s=1.5))
        eventually(lambda: app.stats().busy, what="worker busy")
        queued = Background(lambda: get(server.url))
        eventually(lambda: app.stats().waiting == 1, what="one request queued")
        started = time.monotonic()
        response = client.get("/")
        assert time.monotonic() - started < 0.5
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert busy.result().status_code == 200
        assert queued.result().status_code == 200
        eventually(lambda: app.stats().idle, what="worker idle again")
        (worker,) = app.stats().idle
        assert worker.requests == 2  # the refused request never reached it
    assert app.stats().restarts == {}


def test_queue_timeout_is_503_with_retry_after(serve_each: Any) -> None:
    app = WsgiToAsgi(APP, workers=1, queue_timeout=0.3)
    with serve_each(app) as server, server.client() as client:
        busy = Background(lambda: get(server.url, s=1.5))
        eventually(lambda: app.stats().busy, what="worker busy")
        started = time.monotonic()
        response = client.get("/")
        assert 0.25 <= time.monotonic() - started < 1.2
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert app.stats().waiting == 0
        assert busy.result().status_code == 200
        # The client has the last byte a moment before the front puts the worker back.
        eventually(lambda: app.stats().idle, what="worker idle again")
        assert app.stats().idle[0].requests == 1
    assert app.stats().restarts == {}


def test_client_leaving_the_queue_is_forgotten(serve_each: Any, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    app = WsgiToAsgi(APP, workers=1)
    with serve_each(app) as server, server.client() as client:
        busy = Background(lambda: get(server.url, s=2))
        eventually(lambda: app.stats().busy, what="worker busy")
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(f"GET /?marker={marker} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            eventually(lambda: app.stats().waiting == 1, what="request queued")
        eventually(lambda: app.stats().waiting == 0, timeout=1, what="queue emptied")
        assert not busy.done()  # it left the queue before the worker came free
        assert busy.result().status_code == 200
        assert client.get("/").status_code == 200
        assert not marker.exists()
        eventually(lambda: app.stats().idle, what="worker idle again")
        assert app.stats().idle[0].requests == 2
    assert app.stats().restarts == {}


# -- request body limit ---------------------------------------------------------------


def test_body_over_max_body_size_is_413_and_the_worker_is_free(serve_each: Any) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(5):
            yield b"c" * 400
            time.sleep(0.05)

    app = WsgiToAsgi("apps:echo", workers=1, max_body_size=1000)
    with serve_each(app) as server, server.client() as client:
        (worker,) = app.stats().idle
        response = client.post("/", content=b"x" * 2000)  # Content-Length: refused up front
        assert response.status_code == 413
        assert app.stats().idle == (worker,)  # it never saw the request
        response = client.post("/", content=chunks())  # chunked: refused while streaming
        assert response.status_code == 413
        started = time.monotonic()
        response = client.post("/", content=b"y" * 1000)
        assert time.monotonic() - started < 2
        assert (response.status_code, response.content) == (200, b"y" * 1000)
        eventually(lambda: app.stats().idle, what="worker idle again")
        assert [w.pid for w in app.stats().idle] == [worker.pid]
    assert app.stats().restarts == {}


# -- abort grace ----------------------------------------------------------------------


def test_worker_deaf_to_an_abort_is_killed_after_the_grace(
    serve_each: Any,
) -> None:
    app = WsgiToAsgi(APP, workers=1, abort_grace=0.5)  # timeout stays 30 s: the grace applies
    with serve_each(app) as server:
        with server.client() as client, client.stream("GET", "/hang") as response:
            stuck = int(response.headers["x-worker-pid"])
            assert next(response.iter_raw()) == b"first\n"
        left = time.monotonic()
        eventually(lambda: not pid_alive(stuck), what="stuck worker killed")
        assert time.monotonic() - left < 4
        eventually(lambda: len(app.stats().idle) == 1, what="replacement ready")
        response = get(server.url)
        assert response.status_code == 200
        assert int(response.text) != stuck
    assert sum(app.stats().restarts.values()) == 1
    assert set(app.stats().restarts) <= {"stuck after disconnect", "timeout"}


# -- privilege separation -------------------------------------------------------------

IDS_MODULE = """\
import os
AT_IMPORT = (os.getuid(), os.getgid())

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    ids = AT_IMPORT + (os.getuid(), os.getgid(), len(os.getgroups()))
    return [("%d %d %d %d %d" % ids).encode()]
"""


@pytest.fixture
def public_module_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Like ``module_dir``, but readable by any user."""
    directory = Path(tempfile.mkdtemp(prefix="wsgipool-test-"))
    directory.chmod(0o755)
    monkeypatch.syspath_prepend(str(directory))
    yield directory
    shutil.rmtree(directory)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
@pytest.mark.parametrize("group", [None, "daemon"])
def test_workers_drop_to_the_configured_user_before_import(
    serve_each: Any, public_module_dir: Path, group: str | None
) -> None:
    # The app imports nothing new: the interpreter's own files may not be readable by
    # "nobody" (e.g. a Python installed under /root).
    ref = write_module(public_module_dir, f"ids_{group}", IDS_MODULE)
    (public_module_dir / f"ids_{group}.py").chmod(0o644)
    user = pwd.getpwnam("nobody")
    gid = grp.getgrnam(group).gr_gid if group else user.pw_gid
    with serve_each(WsgiToAsgi(ref, workers=1, user="nobody", group=group)) as server:
        response = get(server.url)
    assert response.status_code == 200
    uid_at_import, gid_at_import, uid, gid_now, groups = map(int, response.text.split())
    assert (uid_at_import, gid_at_import) == (user.pw_uid, gid)
    assert (uid, gid_now) == (user.pw_uid, gid)
    assert groups == 0  # root's supplementary groups are dropped too


def test_worker_env_allow_list(serve_each: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSGIPOOL_TEST_SECRET", "s3cret")
    monkeypatch.setenv("WSGIPOOL_TEST_ALLOWED", "yes")
    names = "WSGIPOOL_TEST_SECRET,WSGIPOOL_TEST_ALLOWED"
    with serve_each(WsgiToAsgi(APP, workers=1)) as server:
        everything = get(server.url + "/env", names=names).json()
    restricted = WsgiToAsgi(APP, workers=1, worker_env="WSGIPOOL_TEST_ALLOWED")
    with serve_each(restricted) as server:
        allowed = get(server.url + "/env", names=names).json()
    assert everything == {"WSGIPOOL_TEST_SECRET": "s3cret", "WSGIPOOL_TEST_ALLOWED": "yes"}
    assert allowed == {"WSGIPOOL_TEST_ALLOWED": "yes"}


# -- graceful shutdown ----------------------------------------------------------------


def test_shutdown_lets_in_flight_requests_finish(serve_each: Any) -> None:
    app = WsgiToAsgi(APP, workers=2)
    server = serve_each(app)
    with server:
        workers = pids(app)
        running = Background(lambda: get(server.url, s=1))
        eventually(lambda: app.stats().busy, what="request in flight")
        server.stop()
        response = running.result()
    assert (response.status_code, int(response.text) in workers) == (200, True)
    assert not any(pid_alive(pid) for pid in workers)
    assert app.stats().restarts == {}


class Lifespan:
    """Drive an app's lifespan the way a server does (``async with Lifespan(app):``)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sent: list[str] = []
        self.inbox: list[str] = ["lifespan.startup"]
        self.wake = anyio.Event()

    async def _receive(self) -> dict[str, Any]:
        while not self.inbox:
            await self.wake.wait()
            self.wake = anyio.Event()
        return {"type": self.inbox.pop(0)}

    async def _send(self, message: dict[str, Any]) -> None:
        self.sent.append(message["type"])

    async def startup(self, tg: Any) -> None:
        tg.start_soon(
            self.app, {"type": "lifespan", "asgi": {"version": "3.0"}}, self._receive, self._send
        )
        while not self.sent:
            await anyio.sleep(0.01)
        assert self.sent == ["lifespan.startup.complete"]

    def begin_shutdown(self) -> None:
        self.inbox.append("lifespan.shutdown")
        self.wake.set()

    async def shut_down(self) -> None:
        while self.sent[-1] != "lifespan.shutdown.complete":
            await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_graceful_timeout_cuts_long_requests_at_shutdown(anyio_backend: str) -> None:
    app = WsgiToAsgi(APP, workers=2, graceful_timeout=0.5)
    lifespan = Lifespan(app)
    answers: dict[str, list[dict[str, Any]]] = {}

    async def request(name: str, seconds: float) -> None:
        scope = http_scope(query_string=f"s={seconds}".encode())
        answers[name] = await call_asgi(app, scope)

    try:
        with anyio.fail_after(6):
            async with anyio.create_task_group() as tg:
                await lifespan.startup(tg)
                tg.start_soon(request, "short", 0.2)
                tg.start_soon(request, "long", 60)
                while len(app.stats().busy) < 2:
                    await anyio.sleep(0.01)
                workers = pids(app)
                begun = time.monotonic()
                lifespan.begin_shutdown()
                while not app.stats().closing:
                    await anyio.sleep(0.01)
                tg.start_soon(request, "late", 0)
                await lifespan.shut_down()
                assert time.monotonic() - begun < 5
    finally:
        app.pool.kill_all()
    assert answers["short"][0]["status"] == 200  # finished within graceful_timeout
    assert answers["late"][0]["status"] == 503  # arrived after shutdown began
    long = answers["long"]
    assert not long or long[0]["status"] >= 500  # cut off: an error, or nothing at all
    assert not any(pid_alive(pid) for pid in workers)


# -- rolling restart ------------------------------------------------------------------


def test_reload_replaces_every_worker_without_failing_a_request(serve_each: Any) -> None:
    app = WsgiToAsgi(APP, workers=2)
    with serve_each(with_reload_route(app)) as server, server.client() as client:
        old = pids(app)
        with Load(server.url, "/?s=0.02", clients=3) as load:
            eventually(lambda: len(load.results) >= 10, what="load running")
            response = client.post("/-/reload-test")
            assert (response.status_code, response.text) == (200, "reloaded")
            mark = len(load.results)
            eventually(lambda: len(load.results) >= mark + 10, what="load after reload")
        new = pids(app)
        assert len(new) == 2
        assert not new & old
        assert load.statuses == {200: len(load.results)}
        assert {pid for _, pid in load.results[mark:]} <= new | old
        eventually(lambda: not any(pid_alive(pid) for pid in old), what="old workers exit")
    assert app.stats().restarts == {"reload": 2}


def test_failed_reload_keeps_the_old_workers(serve_each: Any, module_dir: Path) -> None:
    ref, flag, _ = flaky_app(module_dir, "reload_breaks")
    app = WsgiToAsgi(ref, workers=2)
    with serve_each(with_reload_route(app)) as server, server.client() as client:
        old = pids(app)
        flag.touch()
        response = client.post("/-/reload-test")
        assert response.status_code == 500
        assert response.text.startswith("AppLoadError: ")
        assert "flaky app refuses to load" in response.text
        assert pids(app) == old
        assert {int(client.get("/").text) for _ in range(4)} <= old
        assert app.stats().restarts == {}
        flag.unlink()  # fixed: the next reload goes through
        assert client.post("/-/reload-test").status_code == 200
        assert not pids(app) & old
    assert app.stats().restarts == {"reload": 2}


# -- dynamic pool size ----------------------------------------------------------------


def test_pool_grows_to_max_workers_then_shrinks_when_idle(serve_each: Any) -> None:
    app = WsgiToAsgi(APP, workers=1, max_workers=3, idle_timeout=0.5)
    front = os.getpid()
    with serve_each(app) as server:
        before = children_of(front)
        peak = 0
        requests = [Background(lambda: get(server.url, s=0.8)) for _ in range(5)]
        while not all(r.done() for r in requests):
            peak = max(peak, len(children_of(front) - before) + 1)
            time.sleep(0.02)
        served = {int(r.result().text) for r in requests}
        assert len(served) == 3
        assert peak <= 3
        eventually(lambda: len(pids(app)) == 1, what="shrunk back")
        assert pids(app) <= served
        assert get(server.url).status_code == 200
    assert app.stats().restarts == {"idle": 2}


def test_max_requests_jitter_covers_its_whole_range() -> None:
    # "random 0..N added": with N = 1 a worker must sometimes get limit + 1.
    app = WsgiToAsgi(APP, workers=1, max_requests=5, max_requests_jitter=1)
    limits = {app.pool.launcher.limits(0.0)[0] for _ in range(200)}
    assert limits == {5, 6}


@pytest.mark.anyio
async def test_a_worker_asked_for_is_kept_even_when_its_caller_is_cancelled() -> None:
    # fork/exec runs in another thread: once asked for, the process must reach the pool,
    # or it would live on with its pipes, owned by nobody.
    from wsgipool._config import Config
    from wsgipool._pool.launch import Launcher
    from wsgipool._wire.appspec import describe

    processes: set[Any] = set()
    launcher = Launcher(describe("apps:hello"), Config.from_options({"workers": 1}), processes)
    before = children_of(os.getpid())
    with anyio.CancelScope() as scope:
        scope.cancel()
        worker = await launcher.create()
    assert processes == {worker}
    assert worker.alive()
    worker.kill_now()
    eventually(lambda: children_of(os.getpid()) == before, what="the worker reaped")


WORKERS_OUTLIVE_THE_MAIN_THREAD = """
import threading, time, anyio
from wsgipool._config import Config
from wsgipool._pool.launch import Launcher
from wsgipool._pool.process import WorkerProcess
from wsgipool._wire.appspec import describe

launcher = Launcher(describe("apps:hello"), Config.from_options({"workers": 1}), set())

async def main():
    first = await WorkerProcess.spawn(1, launcher.hello(1), None)
    await first.ready(20)
    await anyio.sleep(1.0)  # the main thread has returned meanwhile
    second = await WorkerProcess.spawn(2, launcher.hello(2), None)
    await second.ready(20)
    print("alive after the main thread ended:", first.alive(), second.alive(), flush=True)
    first.kill_now()
    second.kill_now()

thread = threading.Thread(target=anyio.run, args=(main,))
thread.start()
time.sleep(0.3)
"""


def test_workers_outlive_the_main_thread_when_the_loop_runs_in_another() -> None:
    # A worker dies with the thread that started it (PR_SET_PDEATHSIG): that thread must
    # live as long as the process, not end when the main thread returns.
    import subprocess
    import sys

    from support import TESTS, python_env

    done = subprocess.run(
        [sys.executable, "-c", WORKERS_OUTLIVE_THE_MAIN_THREAD],
        capture_output=True, text=True, timeout=60, cwd=TESTS, env=python_env(TESTS),
    )  # fmt: skip
    assert "alive after the main thread ended: True True" in done.stdout, done.stderr
