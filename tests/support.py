"""Process, timing and server helpers for tests that watch real worker processes."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx

TESTS = Path(__file__).parent


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {timeout}s: {what or predicate}")
        time.sleep(0.01)


def pid_alive(pid: int) -> bool:
    """Is ``pid`` running (a zombie waiting to be reaped counts as gone)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # ESRCH: it went between open and read
        return False


def children_of(pid: int) -> set[int]:
    """Live children of ``pid`` (from /proc), to check that no worker is left behind."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """An ASGI server serving ``app`` on 127.0.0.1 in a thread, with lifespan on.

    ``with server:`` starts it and returns once the app's lifespan start-up completed;
    leaving the block shuts it down (lifespan shutdown included) and joins the thread.
    """

    #: How the server is known in test ids.
    name = ""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self._run, name=f"{self.name}-server")

    def _run(self) -> None:
        raise NotImplementedError

    def _started(self) -> bool:
        raise NotImplementedError

    def stop(self) -> None:
        """Begin shutting down (returns at once; in-flight requests may still finish)."""
        raise NotImplementedError

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self._started():
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.thread.join(60)
        self.sock.close()
        assert not self.thread.is_alive(), f"{self.name} did not stop"

    def client(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("timeout", 30)
        return httpx.Client(base_url=self.url, **kwargs)


class UvicornServer(LiveServer):
    """uvicorn (asyncio); ``options`` are ``uvicorn.Config``'s."""

    name = "uvicorn"

    def __init__(self, app: Any, **options: Any) -> None:
        import uvicorn

        super().__init__(app)
        options.setdefault("log_level", "warning")
        options.setdefault("lifespan", "on")
        self.server = uvicorn.Server(uvicorn.Config(app, **options))

    def _run(self) -> None:
        self.server.run(sockets=[self.sock])

    def _started(self) -> bool:
        return bool(self.server.started)

    def stop(self) -> None:
        self.server.should_exit = True


class HypercornServer(LiveServer):
    """hypercorn's own ``serve`` for ``backend`` ("trio" or "asyncio").

    hypercorn binds only after the lifespan start-up, so the app is wrapped to tell when
    that completed; the socket already listens, so connections made from then on queue.
    ``root_path`` is the one option (hypercorn's config of the same name).
    """

    name = "hypercorn"

    def __init__(self, app: Any, backend: str = "trio", root_path: str = "") -> None:
        from hypercorn.config import Config

        super().__init__(app)
        self.name = f"hypercorn-{backend}"
        self.backend = backend
        self.app = app
        self.up = threading.Event()
        self.down = threading.Event()
        self.sock.listen()
        self.config = Config()
        self.config.bind = [f"fd://{self.sock.detach()}"]  # hypercorn owns (and closes) it
        self.config.accesslog = None
        self.config.root_path = root_path

    async def _app(self, scope: Any, receive: Any, send: Any) -> None:
        async def watch(message: Any) -> None:
            await send(message)
            if message["type"] == "lifespan.startup.complete":
                self.up.set()

        await self.app(scope, receive, watch if scope["type"] == "lifespan" else send)

    async def _main(self) -> None:
        if self.backend == "trio":
            from hypercorn.trio import serve
        else:
            from hypercorn.asyncio import serve  # type: ignore[assignment]

        async def stopped() -> None:
            while not self.down.is_set():
                await anyio.sleep(0.02)

        await serve(self._app, self.config, shutdown_trigger=stopped)

    def _run(self) -> None:
        anyio.run(self._main, backend=self.backend)

    def _started(self) -> bool:
        return self.up.is_set()

    def stop(self) -> None:
        self.down.set()


SERVERS: dict[str, Callable[..., LiveServer]] = {
    "uvicorn": UvicornServer,
    "hypercorn-trio": HypercornServer,
}


@contextlib.contextmanager
def hypercorn_thread(app: Any, backend: str) -> Iterator[str]:
    """hypercorn's own ``serve`` for ``backend`` in a thread, on a socket bound here."""
    from hypercorn.config import Config

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns (and closes) it from here
    config.accesslog = None
    stop = threading.Event()

    async def stopped() -> None:
        while not stop.is_set():
            await anyio.sleep(0.02)

    async def main() -> None:
        if backend == "trio":
            from hypercorn.trio import serve
        else:
            from hypercorn.asyncio import serve  # type: ignore[assignment]
        await serve(app, config, shutdown_trigger=stopped)

    thread = threading.Thread(target=anyio.run, args=(main,), kwargs={"backend": backend})
    thread.start()
    try:
        yield url
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()


def python_env(*folders: str | os.PathLike[str]) -> dict[str, str]:
    """The environment for a child Python: ``folders`` first on its path, then ours."""
    path = [str(folder) for folder in folders]
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


class ServerProcess:
    """A server command (``python -m uvicorn ...``) in a subprocess on a free loopback
    port; its stdout and stderr go to one log file."""

    def __init__(
        self, argv: Sequence[str], log: Path, port: int, cwd: Path, env: dict[str, str],
        admin_url: str = "",
    ) -> None:  # fmt: skip
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.admin_url = admin_url  # where --admin-bind listens, if it was given
        self.log_path = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *argv], cwd=cwd, env=env, stdout=out, stderr=out
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self, path: str = "/-/readyz", timeout: float = 30.0) -> ServerProcess:
        def up() -> bool:
            assert self.proc.poll() is None, f"exited early:\n{self.output()}"
            try:
                return httpx.get(self.url + path, timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout, f"{self.proc.args} to answer {path}")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def host_command(host: str, module: str, port: int) -> list[str]:
    """The command line that serves the ASGI app ``module`` ("mod:app") with ``host``."""
    where = ["127.0.0.1", str(port)]
    if host == "uvicorn":
        return ["uvicorn", "--host", where[0], "--port", where[1], module]
    if host.startswith("hypercorn"):
        worker = host.partition("-")[2] or "asyncio"
        return ["hypercorn", "--bind", ":".join(where), "--worker-class", worker, module]
    if host == "granian":
        return [
            "granian", "--interface", "asgi", "--host", where[0], "--port", where[1],
            "--workers", "1", module,
        ]  # fmt: skip
    raise ValueError(host)


MiB = 1 << 20


def rss() -> int:
    """Resident memory of this process (the front, when the server runs in a thread)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples this process's RSS in a thread; ``growth`` is peak minus start."""

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = rss()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.done.wait(0.005):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start


def open_fds() -> set[int]:
    """This process's open file descriptors."""
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def connect(port: int, rcvbuf: int | None = None, timeout: float = 10.0) -> socket.socket:
    """A raw TCP connection to 127.0.0.1:``port``; ``rcvbuf`` shrinks its receive buffer
    (set before connecting, so the window it announces stays small)."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    return sock


def readable(sock: socket.socket, timeout: float) -> bool:
    """Has ``sock`` something to read (or been closed) within ``timeout`` seconds?"""
    return bool(select.select([sock], [], [], timeout)[0])


class Reader:
    """Reads HTTP/1.1 responses off a raw socket, keeping every byte it saw."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.raw = b""  # everything received so far

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        self.raw += data
        self.buffer += data
        return bool(data)

    def head(self) -> tuple[int, dict[str, str]]:
        """The next response head (an interim 1xx one included): status and headers."""
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"closed before a response head: {self.raw!r}")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers

    def body(self, headers: dict[str, str]) -> bytes:
        """The body that follows ``headers`` (by Content-Length, chunked, or to the end)."""
        if "content-length" in headers:
            size = int(headers["content-length"])
            while len(self.buffer) < size and self._fill():
                pass
            body, self.buffer = self.buffer[:size], self.buffer[size:]
            return body
        if headers.get("transfer-encoding") == "chunked":
            parts = []
            while True:
                while b"\r\n" not in self.buffer:
                    if not self._fill():
                        return b"".join(parts)
                line = self.buffer.partition(b"\r\n")[0]
                size = int(line.split(b";")[0], 16)
                start = len(line) + 2
                while len(self.buffer) < start + size + 2 and self._fill():
                    pass
                parts.append(self.buffer[start : start + size])
                self.buffer = self.buffer[start + size + 2 :]
                if size == 0:
                    return b"".join(parts)
        while self._fill():
            pass
        body, self.buffer = self.buffer, b""
        return body

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next final response (1xx ones skipped): status, headers, body."""
        status, headers = self.head()
        while status < 200:
            status, headers = self.head()
        return status, headers, self.body(headers)

    def closed(self) -> bool:
        """Does the peer close the connection, with nothing more sent (within the socket's
        timeout)?"""
        try:
            return not self._fill() and not self.buffer
        except TimeoutError:
            return False


class Front(ServerProcess):
    """``python -m wsgipool serve ...`` in a subprocess on a free loopback port; with
    ``--status`` or ``--metrics``, an admin listener on another one (see :meth:`admin`)."""

    def __init__(self, tmp_path: Path, *args: str, cwd: Path = TESTS, **env: str) -> None:
        port = free_port()
        argv = ["wsgipool", "serve", *args, "-b", f"127.0.0.1:{port}"]
        admin_url = f"http://127.0.0.1:{free_port()}"
        if {"--status", "--metrics"} & set(args) and "--admin-bind" not in args:
            argv += ["--admin-bind", admin_url.removeprefix("http://")]
        log = tmp_path / f"front-{port}.log"
        super().__init__(argv, log, port, cwd, {**os.environ, **env}, admin_url)

    def get(self, path: str = "/") -> httpx.Response:
        return httpx.get(self.url + path, timeout=30)

    def admin(self, path: str = "/-/status") -> httpx.Response:
        """A page of the admin listener."""
        return httpx.get(self.admin_url + path, timeout=30)
