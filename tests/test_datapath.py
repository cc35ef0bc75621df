"""The data path, byte for byte: a grid of uploads and downloads through every host.

Uploads go with a Content-Length and chunked, in pieces from 1 byte to 300 KB, with
totals on both sides of every threshold the front has: 32 KiB (a body that comes inline
with the request), 1 MiB (the memory one spool may hold, and a worker's pipe), and on to
9 MiB. The app answers the body's SHA-256, size and CONTENT_LENGTH. Downloads are
:func:`apps.pattern` bytes the app yields in pieces of the same sizes, with and without a
Content-Length, checked whole. Many small pieces matter most: a body of more than
IOV_MAX (1024) pieces once reached ``os.writev`` in one call, and the request hung until
the worker timeout (504). Pieces cost time (a chunk costs hypercorn ~0.3 ms), so the
cross product keeps to :data:`MAX_PIECES` a body and :data:`MANY_PIECES` adds the cells
of many small ones (up to 4096; 16,384 through ASGITransport, where they are cheap).

Hosts: uvicorn (h11, httptools; and both again with the protocols of ``wsgipool serve``,
which write a response head with its first body chunk), hypercorn (asyncio, trio), and
httpx's ASGITransport
in process, which gives every piece its own ``http.request`` message and runs no
lifespan (the workers start with the first requests). Each host serves one
:class:`WsgiToAsgi` for the whole module; the cells of a test run a few at a time, each
repeated, so races show; a test reports every failing cell in one assertion.

Early answers: past ``max_body_size`` the front answers 413 while the client may still
be sending; every client (httpx sync and async, raw sockets with ``Expect:
100-continue``) must read that 413, not a reset connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

import anyio
import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from apps import pattern
from support import HypercornServer, LiveServer, MiB, Reader, UvicornServer, connect, readable
from wsgipool import WsgiToAsgi
from wsgipool._serve.edge import HEADER_TIMEOUT, MAX_CONNECTIONS, EdgeSettings
from wsgipool._serve.protocols import protocol_class

KiB = 1024
#: Seconds a worker may spend on a request: a stuck one fails with 504 soon.
WORKER_TIMEOUT = 5.0
#: Seconds a client waits for a byte (longer than the worker timeout, to see the 504).
CLIENT_TIMEOUT = 10.0
#: Seconds a grid test may start new requests for, to end well within pytest's timeout.
GRID_BUDGET = 45.0
#: The most pieces a body of the cross product is sent or produced in (more cost
#: seconds); :data:`MANY_PIECES` has the bodies of many more.
MAX_PIECES = 1200
#: Requests at once, as many as a host has workers: none waits for a stuck one.
CONCURRENCY = 3

#: ``edge-*``: uvicorn with the protocols ``wsgipool serve`` runs (its own writes, limits).
HOSTS = ["h11", "httptools", "edge-h11", "edge-httptools", "hypercorn-asyncio",
         "hypercorn-trio", "asgi"]  # fmt: skip
SERVERS = HOSTS[:-1]

PIECE_SIZES = (1, 100, KiB, 8191, 65536, 300_000)
TOTALS = (0, 1, 32 * KiB, 32 * KiB + 1, MiB + 1, 4 * MiB, 9 * MiB)
#: (piece, total) left out: large pieces of a large body are alike, one size a body will do.
ALIKE = {(65536, 9 * MiB), (300_000, 4 * MiB)}
#: Many small pieces, on both sides of IOV_MAX: (piece, total).
MANY_PIECES = [(1, 1025), (100, 2621 * 100), (KiB, 1023 * KiB), (KiB, MiB), (KiB, 4 * MiB)]
#: More, for the hosts where they take little time.
MORE_PIECES = {"asgi": [(KiB, 16 * MiB)]}

#: A cell by name, and the call that says what went wrong in it (None: nothing).
Job = tuple[str, Callable[[], str | None]]


@dataclass(frozen=True, order=True)
class Cell:
    """A body of ``total`` bytes in pieces of ``piece`` bytes (the last one shorter)."""

    total: int
    piece: int

    def __str__(self) -> str:
        count = -(-self.total // self.piece)
        return f"{self.total}B={count}x{self.piece}B"

    def data(self) -> bytes:
        return _data(self.total, self.piece)

    def pieces(self, data: bytes) -> Iterator[bytes]:
        for at in range(0, len(data), self.piece):
            yield data[at : at + self.piece]


@cache
def _data(total: int, piece: int) -> bytes:
    """A body for each cell, made once for every host."""
    return b"".join(pattern(total, seed=total % 251 + piece))


@cache
def _download_digest(total: int, piece: int) -> str:
    return hashlib.sha256(b"".join(pattern(total, 7, piece))).hexdigest()


def grid(host: str) -> list[Cell]:
    """Every piece size with every total, as long as the pieces stay few enough; plus
    :data:`MANY_PIECES` (and ``host``'s :data:`MORE_PIECES`). Largest first, so the long
    cells start early."""
    cells = {
        Cell(total, min(piece, max(total, 1)))
        for piece in PIECE_SIZES
        for total in TOTALS
        if total <= piece * MAX_PIECES and (piece, total) not in ALIKE
    }
    cells.update(Cell(total, piece) for piece, total in MANY_PIECES + MORE_PIECES.get(host, []))
    return sorted(cells, reverse=True)


class Target:
    """One host serving one :class:`WsgiToAsgi`; any thread may make requests."""

    host: str
    app: WsgiToAsgi

    def post(self, pieces: Iterable[bytes], headers: dict[str, str]) -> httpx.Response:
        raise NotImplementedError

    def get(self, path: str) -> httpx.Response:
        raise NotImplementedError


class ServerTarget(Target):
    """A real server on 127.0.0.1, through one shared :class:`httpx.Client`."""

    def __init__(self, host: str, app: WsgiToAsgi, client: httpx.Client) -> None:
        self.host = host
        self.app = app
        self.client = client

    def post(self, pieces: Iterable[bytes], headers: dict[str, str]) -> httpx.Response:
        return self.client.post("/", content=pieces, headers=headers)

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path)


async def _aiter(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


class AsgiTarget(Target):
    """httpx's ASGITransport, the app's event loop in a blocking portal's thread."""

    def __init__(self, app: WsgiToAsgi, client: httpx.AsyncClient, portal: BlockingPortal) -> None:
        self.host = "asgi"
        self.app = app
        self.client = client
        self.portal = portal

    async def _post(self, pieces: Iterable[bytes], headers: dict[str, str]) -> httpx.Response:
        with anyio.fail_after(CLIENT_TIMEOUT):
            return await self.client.post("/", content=_aiter(pieces), headers=headers)

    async def _get(self, path: str) -> httpx.Response:
        with anyio.fail_after(CLIENT_TIMEOUT):
            return await self.client.get(path)

    def post(self, pieces: Iterable[bytes], headers: dict[str, str]) -> httpx.Response:
        return self.portal.call(self._post, pieces, headers)

    def get(self, path: str) -> httpx.Response:
        return self.portal.call(self._get, path)


def server_for(app: WsgiToAsgi, host: str) -> LiveServer:
    if host.startswith("hypercorn-"):
        return HypercornServer(app, host.partition("-")[2])
    if host.startswith("edge-"):
        edge = EdgeSettings(app.config.limits, HEADER_TIMEOUT, MAX_CONNECTIONS, app.refusals)
        return UvicornServer(app, http=protocol_class(host.partition("-")[2], edge))
    return UvicornServer(app, http=host)


@contextlib.contextmanager
def hosting(host: str) -> Iterator[Target]:
    """``apps:datapath`` served by ``host`` until the block ends."""
    options: dict[str, Any] = {"workers": CONCURRENCY, "timeout": WORKER_TIMEOUT}
    if host != "asgi":
        app = WsgiToAsgi("apps:datapath", **options)
        with (
            server_for(app, host) as server,
            httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as client,
        ):
            yield ServerTarget(host, app, client)
        return

    async def make() -> WsgiToAsgi:  # in the loop that will serve it
        return WsgiToAsgi("apps:datapath", **options)

    with start_blocking_portal("asyncio") as portal:
        app = portal.call(make)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        )
        try:
            yield AsgiTarget(app, client, portal)
        finally:
            portal.call(client.aclose)
            portal.call(app.aclose)


@pytest.fixture(scope="module", params=HOSTS)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    with hosting(request.param) as hosted:
        yield hosted


def outcome(call: Callable[[], str | None]) -> str | None:
    """What went wrong in ``call`` (its own message, or the exception), or None."""
    try:
        return call()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def run_grid(jobs: list[Job], repeat: int) -> list[str]:
    """Run every job ``repeat`` times, :data:`CONCURRENCY` jobs at once (a job's repeats
    one after another, stopping at its first failure); every failure, by name. Jobs not
    begun within :data:`GRID_BUDGET` fail as not run."""
    deadline = time.monotonic() + GRID_BUDGET

    def run(name: str, call: Callable[[], str | None]) -> str | None:
        for attempt in range(1, repeat + 1):
            if time.monotonic() > deadline:
                return f"{name}: not run, out of time"
            began = time.monotonic()
            problem = outcome(call)
            if problem is not None:
                took = time.monotonic() - began
                return f"{name} (try {attempt}, {took:.1f}s): {problem}"
        return None

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        futures = [pool.submit(run, name, call) for name, call in jobs]
        return [failure for future in futures if (failure := future.result()) is not None]


def described(failures: list[str], total: int) -> str:
    return f"{len(failures)} of {total} cells failed:\n" + "\n".join(failures)


def upload(target: Target, cell: Cell, chunked: bool) -> Callable[[], str | None]:
    data = cell.data()
    expected = {"sha256": hashlib.sha256(data).hexdigest(), "size": cell.total,
                "length": str(cell.total)}  # fmt: skip
    headers = {} if chunked else {"content-length": str(cell.total)}

    def call() -> str | None:
        response = target.post(cell.pieces(data), headers)
        if response.status_code != 200:
            return f"{response.status_code} {response.content[:100]!r}"
        answer = response.json()
        return None if answer == expected else f"got {answer}"

    return call


def download(target: Target, cell: Cell, length: bool) -> Callable[[], str | None]:
    expected = _download_digest(cell.total, cell.piece)
    path = f"/?size={cell.total}&block={cell.piece}&seed=7&cl={int(length)}"

    def call() -> str | None:
        response = target.get(path)
        body = response.content
        declared = response.headers.get("content-length")
        if response.status_code != 200:
            return f"{response.status_code} {body[:100]!r}"
        if length and declared != str(cell.total):
            return f"Content-Length {declared!r}"
        if declared is not None and declared != str(len(body)):
            return f"Content-Length {declared!r} for {len(body)} bytes"
        if hashlib.sha256(body).hexdigest() != expected:
            return f"{len(body)} bytes, not the {cell.total} sent"
        return None

    return call


def run_on(target: Target, jobs: list[Job], repeat: int) -> None:
    """:func:`run_grid`; a worker lost meanwhile (killed at its timeout) fails too."""
    before = target.app.stats().restarts
    failures = run_grid(jobs, repeat)
    after = target.app.stats().restarts
    lost = {why: count - before.get(why, 0) for why, count in after.items()}
    if any(lost.values()):
        failures.append(f"workers restarted: {lost}")
    assert not failures, described(failures, len(jobs))


def test_uploads_arrive_whole(target: Target) -> None:
    jobs = [
        (f"{'chunked' if chunked else 'length'} {cell}", upload(target, cell, chunked))
        for cell in grid(target.host)
        for chunked in (False, True)
    ]
    run_on(target, jobs, repeat=2)


def test_downloads_arrive_whole(target: Target) -> None:
    jobs = [
        (f"{'length' if length else 'no length'} {cell}", download(target, cell, length))
        for cell in grid(target.host)
        for length in (True, False)
    ]
    run_on(target, jobs, repeat=1)


# Early answers: 413 past max_body_size, read by every kind of client.


def blocks(size: int, piece: int = 65536) -> Iterator[bytes]:
    block = b"u" * piece
    for at in range(0, size, piece):
        yield block[: size - at]


def _refused(response: httpx.Response) -> str | None:
    if response.status_code == 413:
        return None
    return f"{response.status_code} {response.content[:100]!r}"


@cache
def tls() -> ssl.SSLContext:
    """One context for every client: httpx loads its CA bundle anew for each (~0.1 s)."""
    return ssl.create_default_context()


def sync_upload(url: str, size: int, chunked: bool) -> str | None:
    content = blocks(size) if chunked else b"u" * size
    with httpx.Client(timeout=CLIENT_TIMEOUT, verify=tls()) as client:
        return _refused(client.post(url, content=content))


class Upload(httpx.AsyncByteStream):
    """``size`` bytes for httpx's async client from an iterator that is no async
    generator: trio warns of one dropped unfinished, and httpx's own (for ``content=``)
    are, when the server answers before the body is all sent."""

    def __init__(self, size: int) -> None:
        self.pieces = blocks(size)

    def __aiter__(self) -> Upload:  # type: ignore[override]
        return self

    async def __anext__(self) -> bytes:
        try:
            return next(self.pieces)
        except StopIteration:
            raise StopAsyncIteration from None


def async_upload(url: str, size: int, chunked: bool, backend: str) -> str | None:
    async def main() -> str | None:
        framing = {"transfer-encoding": "chunked"} if chunked else {"content-length": str(size)}
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT, verify=tls()) as client:
            request = client.build_request("POST", url, headers=framing)
            request.stream = Upload(size)
            return _refused(await client.send(request))

    return anyio.run(main, backend=backend)


def raw_upload(port: int, size: int, chunked: bool) -> str | None:
    """With ``Expect: 100-continue``: send the body only once asked for it, and stop as
    soon as an answer comes; that answer must be 413."""
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    head = f"POST / HTTP/1.1\r\nHost: t\r\n{framing}\r\nExpect: 100-continue\r\n\r\n"
    with connect(port, timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(head.encode())
        reader = Reader(sock)
        status, headers = reader.head()
        if status == 100:
            with contextlib.suppress(OSError):  # the server may stop reading: fine
                for block in blocks(size):
                    if reader.buffer or readable(sock, 0):
                        break  # answered
                    sock.sendall(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
                else:
                    if chunked:
                        sock.sendall(b"0\r\n\r\n")
            status, headers = reader.head()
        body = reader.body(headers)
        return None if status == 413 else f"{status} {body[:100]!r}"


def raw_upload_regardless(port: int, size: int) -> str | None:
    """With ``Expect: 100-continue``, as a client that gives up waiting for ``100 Continue``
    after a second (curl does) and sends the whole body before it reads: whatever came
    first (a 100 some servers send at once, the 413, or nothing yet), it must read 413."""
    head = f"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\nExpect: 100-continue\r\n\r\n"
    with connect(port, timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(head.encode())
        if readable(sock, 1.0) and b"HTTP/1.1 413" in sock.recv(4096, socket.MSG_PEEK):
            return None  # answered before it sent anything: it sends nothing
        for block in blocks(size):
            sock.sendall(block)  # a reset would fail here or below
        reader = Reader(sock)
        status, headers = reader.head()
        while status == 100:
            status, headers = reader.head()
        body = reader.body(headers)
        return None if status == 413 else f"{status} {body[:100]!r}"


def early_jobs(server: LiveServer, size: int) -> list[Job]:
    """Each kind of client sending ``size`` bytes, with a Content-Length and chunked."""
    jobs: list[Job] = []
    for chunked in (False, True):
        how = f"{size >> 20} MiB {'chunked' if chunked else 'length'}"
        jobs += [
            (f"httpx sync {how}", partial(sync_upload, server.url, size, chunked)),
            (f"httpx async asyncio {how}",
             partial(async_upload, server.url, size, chunked, "asyncio")),
            (f"httpx async trio {how}", partial(async_upload, server.url, size, chunked, "trio")),
            (f"raw 100-continue {how}", partial(raw_upload, server.port, size, chunked)),
        ]  # fmt: skip
    jobs.append((f"raw 100-continue, sent regardless {size >> 20} MiB",
                 partial(raw_upload_regardless, server.port, size)))  # fmt: skip
    return jobs


@pytest.mark.parametrize("host", SERVERS)
def test_early_413_reaches_every_client(host: str) -> None:
    app = WsgiToAsgi("apps:digest", workers=1, timeout=WORKER_TIMEOUT, max_body_size=MiB)
    with server_for(app, host) as server:
        # 2 MiB twice, as a reset is a race; 20 MiB once (every byte of it is sent, and
        # read and dropped by the front).
        failures = run_grid(early_jobs(server, 2 * MiB), repeat=2)
        failures += run_grid(early_jobs(server, 20 * MiB), repeat=1)
    assert not failures, described(failures, 18)
