"""What ``wsgipool serve`` puts around the adapter: listening sockets, SIGHUP, SIGUSR1,
``--reload``.

:class:`ServedApp` is the ASGI app uvicorn runs. Outside lifespan it is the adapter
itself; during lifespan it also runs small tasks once the pool is up: one turns SIGHUP
into a rolling restart (the signal only wakes the task), one turns SIGUSR1 into a log
entry of each busy worker's stacks, and one (``--reload``) polls the mtimes of the
``.py`` files under the working directory and restarts the workers when one changes.
uvicorn turns SIGTERM/SIGINT into a graceful shutdown, which ends with the lifespan
shutdown that stops the pool.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import socket
import stat
import threading

import anyio

from .._errors import WsgiPoolError
from .._front.adapter import WsgiToAsgi
from .._types import Message, Receive, Scope, Send

log = logging.getLogger("wsgipool.cli")

#: Seconds between two looks at the source files under ``--reload``.
RELOAD_POLL = 1.0
#: Pending connections the kernel queues per listening socket (uvicorn's default).
LISTEN_BACKLOG = 2048
_SKIP_DIRS = {"__pycache__", "node_modules", "site-packages"}


class Listener:
    """One bound, listening socket and how to name it in the log."""

    def __init__(self, sock: socket.socket, url: str, path: str | None = None) -> None:
        self.sock, self.url, self.path = sock, url, path

    def close(self) -> None:
        self.sock.close()
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def split_address(address: str) -> tuple[str, int]:
    """``"127.0.0.1:8000"`` -> ``("127.0.0.1", 8000)``; ``"[::1]:80"``; ``":80"`` (any)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"not HOST:PORT or unix:PATH: {address!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port)


def parse_binds(text: str) -> tuple[str, ...]:
    """``"0.0.0.0:8000, unix:/run/app.sock"`` -> both addresses, each checked."""
    binds = tuple(text.replace(",", " ").split())
    for address in binds:
        if not address.startswith("unix:"):
            split_address(address)
    if not binds:
        raise ValueError("no address")
    return binds


def bind(address: str, reuse_port: bool = False, mode: int = 0o666) -> Listener:
    """A listening socket for HOST:PORT or unix:PATH (a stale socket file is replaced,
    the new one gets ``mode``); ``reuse_port``: SO_REUSEPORT, so several servers share
    the port and the kernel spreads the connections."""
    if address.startswith("unix:"):
        path = address[len("unix:") :]
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            os.chmod(path, mode)
            sock.listen(LISTEN_BACKLOG)
        except OSError:
            sock.close()
            raise
        return Listener(sock, address, path)
    host, port = split_address(address)
    family, kind, proto, _, where = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(where)
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if family == socket.AF_INET6 else bound_host
    return Listener(sock, f"http://{shown}:{bound_port}")


def server_name(parser: str) -> str:
    """``"uvicorn 0.30.0, uvloop, httptools"``: what serves, with which loop and parser."""
    import uvicorn

    parts = [f"uvicorn {uvicorn.__version__}"]
    parts += ["uvloop"] if importlib.util.find_spec("uvloop") else []
    return ", ".join([*parts, parser])


def sources(root: str) -> dict[str, int]:
    """Modification times of the ``.py`` files under ``root`` (hidden dirs and venvs skipped)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [
            d for d in dirs
            if not d.startswith(".") and d not in _SKIP_DIRS
            and not os.path.exists(os.path.join(folder, d, "pyvenv.cfg"))
        ]  # fmt: skip
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with contextlib.suppress(OSError):
                    found[path] = os.stat(path).st_mtime_ns
    return found


class ServedApp:
    """The adapter, plus rolling restarts on SIGHUP and on file changes during lifespan."""

    def __init__(self, app: WsgiToAsgi, banner: str, reload: bool) -> None:
        self.app = app
        self.banner = banner
        self.reload = reload
        self.started: anyio.Event  # made with the event loop, when lifespan begins
        self.helpers: anyio.CancelScope

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        self.started, self.helpers = anyio.Event(), anyio.CancelScope()

        async def lifespan_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                self.helpers.cancel()  # no restart may begin while the pool stops
            return message

        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                log.info("%s", self.banner)
                self.started.set()
            await send(message)

        async with anyio.create_task_group() as tg:
            tg.start_soon(self.run_helpers)
            await self.app(scope, lifespan_receive, lifespan_send)
            self.helpers.cancel()

    async def run_helpers(self) -> None:
        with self.helpers:
            async with anyio.create_task_group() as tg:
                if threading.current_thread() is threading.main_thread():
                    tg.start_soon(self.on_sighup)
                    tg.start_soon(self.on_sigusr1)
                if self.reload:
                    tg.start_soon(self.watch_files)

    async def on_sighup(self) -> None:
        with anyio.open_signal_receiver(signal.SIGHUP) as signals:
            async for _ in signals:
                await self.started.wait()
                await self.restart("SIGHUP")

    async def on_sigusr1(self) -> None:
        """Log the stacks of every busy worker (see ``WsgiToAsgi.log_stacks``)."""
        with anyio.open_signal_receiver(signal.SIGUSR1) as signals:
            async for _ in signals:
                await self.started.wait()
                await self.app.log_stacks()

    async def watch_files(self) -> None:
        """``--reload``: restart the workers when a ``.py`` file under the cwd changes."""
        root = os.getcwd()
        await self.started.wait()
        seen = await anyio.to_thread.run_sync(sources, root)
        while True:
            await anyio.sleep(RELOAD_POLL)
            now = await anyio.to_thread.run_sync(sources, root)
            changed = sorted(path for path in now.keys() | seen.keys()
                             if now.get(path) != seen.get(path))  # fmt: skip
            seen = now
            if changed:
                await self.restart(f"{os.path.relpath(changed[0], root)} changed")

    async def restart(self, why: str) -> None:
        log.info("rolling restart of the workers (%s)", why)
        try:
            await self.app.reload()
        except (WsgiPoolError, OSError, TimeoutError) as exc:
            log.error("rolling restart failed, the old workers keep serving: %s", exc)
