"""Request bodies are read by the front before a worker is taken: slow and stalled
uploaders are cut with 408 and never reach a worker, legitimate slow clients get every
byte, chunked uploads get an exact CONTENT_LENGTH, an over-long declared body is refused
before ``100 Continue``; with ``buffer_requests=False`` the body still streams to the app.

Real uvicorn servers (h11 and httptools) on 127.0.0.1, raw sockets where the bytes or the
pace matter.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from apps import pattern
from asgi_helpers import call_asgi, http_scope
from support import MiB, Reader, connect, hypercorn_thread, open_fds, readable, wait_for
from wsgipool import WsgiToAsgi

HTTP = pytest.mark.parametrize("http", ["h11", "httptools"])


def post_head(length: int, path: str = "/", *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: t", f"Content-Length: {length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@contextlib.contextmanager
def hosted(serve: Any, app: WsgiToAsgi, host: str) -> Iterator[int]:
    """The port of ``app`` served by uvicorn (``h11``, ``httptools``) or hypercorn
    (``hypercorn-asyncio``, ``hypercorn-trio``)."""
    if host.startswith("hypercorn-"):
        with hypercorn_thread(app, host.partition("-")[2]) as url:
            yield int(url.rpartition(":")[2])
    else:
        with serve(app, http=host) as server:
            yield server.port


def served(app: WsgiToAsgi) -> int:
    """Requests the pool's workers have served, once they are all idle again."""
    wait_for(lambda: not app.stats().busy, what="every worker idle")
    return sum(w.requests for w in app.stats().workers)


def trickle(port: int, started: threading.Event, answered: list[bool]) -> tuple[int, str, bool]:
    """POST headers for 100,000 bytes, then one byte every 0.5 s until an answer comes
    (at most 20 bytes); the answer's status, its Connection header, and whether the
    connection was closed after it."""
    with connect(port) as sock:
        sock.sendall(post_head(100_000))
        for _ in range(20):
            try:
                sock.sendall(b"x")
            except OSError:
                break
            started.set()
            if readable(sock, 0.5):
                break
        answered.append(True)
        reader = Reader(sock)
        status, headers, _ = reader.response()
        return status, headers.get("connection", ""), reader.closed()


@HTTP
def test_trickling_uploaders_get_408_and_never_reach_a_worker(serve: Any, http: str) -> None:
    app = WsgiToAsgi(
        "apps:digest", workers=1, client_timeout=5, min_client_rate=100, client_rate_grace=2
    )
    with serve(app, http=http) as server, ThreadPoolExecutor(2) as pool:
        started = [threading.Event(), threading.Event()]
        answered: list[bool] = []
        results = [pool.submit(trickle, server.port, event, answered) for event in started]
        for event in started:
            assert event.wait(10)
        # Both uploads are under way; the only worker is free for anyone else.
        response = httpx.get(server.url, timeout=10)
        assert response.status_code == 200
        assert response.json()["size"] == 0
        assert not answered  # ... while the trickling clients are still sending
        for result in results:
            assert result.result(timeout=20) == (408, "close", True)
        assert served(app) == 1  # the GET alone
        assert app.stats().restarts == {}


@pytest.mark.parametrize("buffered", [True, False])
@pytest.mark.parametrize("host", ["h11", "httptools", "hypercorn-trio"])
def test_stalled_body_gets_408_after_client_timeout(serve: Any, host: str, buffered: bool) -> None:
    # Buffered, the body never reaches a worker; streamed to the app as it comes, the
    # client must keep the same pace: the app is told to stop and the same worker serves on.
    options = {"client_timeout": 1, "min_client_rate": 0, "buffer_requests": buffered}
    app = WsgiToAsgi("apps:digest", workers=1, **options)
    with hosted(serve, app, host) as port:
        for sent in (b"", b"part of it"):  # nothing at all, or a start and then nothing
            with connect(port) as sock:
                sock.sendall(post_head(100) + sent)
                reader = Reader(sock)
                status, headers, body = reader.response()
                assert (status, headers["connection"], body) == (408, "close", b"Request Timeout")
                assert reader.closed()
        assert served(app) == (0 if buffered else 1)  # unbuffered: the one that had begun
        pids = [w.pid for w in app.stats().workers]
        response = httpx.post(f"http://127.0.0.1:{port}/", content=b"abc", timeout=10)
        assert response.json()["size"] == 3
        assert [w.pid for w in app.stats().workers] == pids
        assert app.stats().restarts == {}


def paced(data: bytes, rate: int, piece: int = 8192) -> Iterator[bytes]:
    """``data`` in pieces, at about ``rate`` bytes a second (a slow but steady client)."""
    began = time.monotonic()
    for at in range(0, len(data), piece):
        ahead = began + at / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        yield data[at : at + piece]


def slow_upload(url: str, data: bytes, rate: int) -> dict[str, Any]:
    with httpx.Client(timeout=30) as client:
        response = client.post(
            url, content=paced(data, rate), headers={"content-length": str(len(data))}
        )
        assert response.status_code == 200
        return dict(response.json())


def slow_download(port: int, size: int, rate: int) -> bytes:
    """GET ``size`` bytes of :func:`apps.pattern`, read at about ``rate`` bytes a second."""
    with connect(port, rcvbuf=16384, timeout=30) as sock:
        sock.sendall(f"GET /?mib={size // MiB}&seed=7 HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        reader = Reader(sock)
        status, headers = reader.head()
        assert status == 200
        assert int(headers["content-length"]) == size
        began, body = time.monotonic(), [reader.buffer]
        got = len(reader.buffer)
        while got < size:
            ahead = began + got / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            piece = sock.recv(8192)
            assert piece, f"closed after {got} of {size} bytes"
            body.append(piece)
            got += len(piece)
        return b"".join(body)


def test_slow_but_steady_clients_get_every_byte_with_default_settings(serve: Any) -> None:
    # Each transfer lasts about 6 s, past the default 5 s client_rate_grace, far above
    # the default 240 bytes/s, with gaps far below the default 30 s client_timeout.
    upload = b"".join(pattern(MiB + 17, seed=3))
    uploads = WsgiToAsgi("apps:digest", workers=1)
    downloads = WsgiToAsgi("apps:random_download", workers=1)
    with (
        serve(uploads, http="h11") as up,
        serve(downloads, http="h11") as down,
        ThreadPoolExecutor(2) as pool,
    ):
        sent = pool.submit(slow_upload, up.url, upload, 176 * 1024)
        received = pool.submit(slow_download, down.port, 8 * MiB, 1400 * 1024)
        assert sent.result(timeout=30) == {
            "sha256": hashlib.sha256(upload).hexdigest(),
            "size": len(upload),
            "length": str(len(upload)),
        }
        assert received.result(timeout=30) == b"".join(pattern(8 * MiB, seed=7))
        assert uploads.stats().restarts == downloads.stats().restarts == {}


@HTTP
def test_chunked_upload_gets_an_exact_content_length(serve: Any, http: str) -> None:
    def chunked(data: bytes) -> Iterator[bytes]:
        for at in range(0, len(data), 40_000):
            yield data[at : at + 40_000]

    app = WsgiToAsgi("apps:digest", workers=1)
    with serve(app, http=http) as server, server.client() as client:
        # Inline with the request, through the feeding task, and spilled to a file.
        for size in (100, 100_000, 3 * MiB):
            data = b"".join(pattern(size, seed=size))
            response = client.post("/", content=chunked(data))
            assert response.request.headers["transfer-encoding"] == "chunked"
            assert response.json() == {
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": size,
                "length": str(size),
            }


def test_chunked_upload_without_buffering_has_no_content_length(serve: Any) -> None:
    app = WsgiToAsgi("apps:digest", workers=1, buffer_requests=False)
    with serve(app) as server, server.client() as client:
        response = client.post("/", content=iter([b"abc", b"def"]))
        assert response.json()["size"] == 6
        assert response.json()["length"] is None  # streamed: nobody knows it yet


@HTTP
def test_chunked_upload_reaches_django(serve: Any, http: str) -> None:
    # Django reads request.body by CONTENT_LENGTH alone; without one it reads nothing.
    app = WsgiToAsgi("djsite.wsgi:application", workers=1)
    with serve(app, http=http) as server, server.client() as client:
        # One that comes whole in the server's first message, and one that does not.
        for data in (b"a small chunked body", b"".join(pattern(200_000, seed=11))):
            response = client.post("/echo", content=iter([data[:1000], data[1000:]]))
            assert response.request.headers["transfer-encoding"] == "chunked"
            assert response.status_code == 200
            assert response.content == data


@HTTP
def test_declared_body_over_max_body_size_is_413_before_100_continue(serve: Any, http: str) -> None:
    app = WsgiToAsgi("apps:digest", workers=1, max_body_size=1000)
    with serve(app, http=http) as server:
        with connect(server.port) as sock:
            sock.sendall(post_head(2_000_000, "/", "Expect: 100-continue"))
            reader = Reader(sock)
            status, headers, body = reader.response()
            assert reader.raw.startswith(b"HTTP/1.1 413 ")  # no 100 Continue first
            assert (status, headers["connection"], body) == (413, "close", b"Payload Too Large")
            assert reader.closed()
        # A body within the limit is asked for with 100 Continue, and served.
        with connect(server.port) as sock:
            sock.sendall(post_head(5, "/", "Expect: 100-continue"))
            reader = Reader(sock)
            assert reader.head()[0] == 100
            sock.sendall(b"hello")
            status, _, body = reader.response()
            assert status == 200
            assert json.loads(body)["size"] == 5
        # A chunked body has no length to check up front: it is refused once over it.
        response = httpx.post(server.url, content=iter([b"x" * 800, b"y" * 800]), timeout=10)
        assert (response.status_code, response.headers["connection"]) == (413, "close")
        assert served(app) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("buffered", [True, False])
async def test_a_chunked_body_over_the_limit_in_one_message_is_refused_and_counted(
    buffered: bool,
) -> None:
    # httpx's ASGITransport sends a body as one message: 413, counted like the others.
    headers = [(b"host", b"t"), (b"transfer-encoding", b"chunked")]
    scope = http_scope(method="POST", headers=headers)
    options = {"workers": 1, "max_body_size": 1000, "buffer_requests": buffered}
    async with WsgiToAsgi("apps:digest", **options) as app:
        sent = await call_asgi(app, scope, body=[b"x" * 2000])
        assert sent[0]["status"] == 413
        assert app.refusals.requests == {(413, "body too large"): 1}
        assert sum(w.requests for w in app.stats().workers) == 0


@HTTP
def test_a_body_whose_last_piece_crosses_the_limit_is_answered_and_closed_at_once(
    serve: Any, http: str
) -> None:
    # Nothing is left to drain once the last piece came: the front must not wait for
    # more (a receive() on uvicorn then waits for the client to leave).
    app = WsgiToAsgi("apps:digest", workers=1, max_body_size=1000)
    with serve(app, http=http) as server, connect(server.port, timeout=3) as sock:
        head = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        sock.sendall(head + b"258\r\n" + b"a" * 600 + b"\r\n")
        sock.sendall(b"258\r\n" + b"b" * 600 + b"\r\n0\r\n\r\n")
        reader = Reader(sock)
        assert reader.response()[0] == 413
        assert reader.closed()  # within the socket's 3 s, well before a 5 s linger gap


@HTTP
def test_without_buffering_the_app_reads_the_body_as_it_arrives(serve: Any, http: str) -> None:
    app = WsgiToAsgi("apps:line_echo", workers=1, buffer_requests=False)
    first, rest = b"first line\n", b"second line\nthird line\n"
    with serve(app, http=http) as server, connect(server.port) as sock:
        sock.sendall(post_head(len(first + rest)) + first)
        reader = Reader(sock)
        status, headers = reader.head()
        assert status == 200
        while first not in reader.buffer:  # the app echoed the first line already
            assert reader._fill()
        sock.sendall(rest)
        assert reader.body(headers) == first + rest
    assert app.stats().restarts == {}


@pytest.mark.anyio
async def test_a_large_body_in_one_message_leaves_no_spool_behind(tmp_path: Path) -> None:
    # httpx's ASGITransport and Starlette's TestClient send a body as one message: over
    # 1 MiB, the front holds it in a file while the worker reads it.
    size = 2 * MiB
    headers = [(b"host", b"t"), (b"content-length", str(size).encode())]
    scope = http_scope(method="POST", headers=headers)
    async with WsgiToAsgi("apps:upload_size", workers=1, buffer_dir=str(tmp_path)) as app:
        before = open_fds()
        for _ in range(3):
            sent = await call_asgi(app, scope, body=[b"x" * size])
            assert sent[1]["body"] == str(size).encode()
        assert open_fds() <= before
        assert app.budget.used == 0


@pytest.mark.anyio
@pytest.mark.parametrize("pieces", [[b"ab", b"cd"], [b"x" * 50_000, b"y" * 50_000]])
async def test_with_no_memory_budget_bodies_go_to_files_that_are_closed(
    tmp_path: Path, pieces: list[bytes]
) -> None:
    options = {"workers": 1, "buffer_dir": str(tmp_path), "buffer_memory": 0}
    async with WsgiToAsgi("apps:digest", **options) as app:
        before = open_fds()
        for _ in range(3):
            sent = await call_asgi(app, http_scope(method="POST"), body=pieces)
            data = b"".join(pieces)
            assert json.loads(sent[1]["body"]) == {
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "length": str(len(data)),
            }
        assert open_fds() <= before


@pytest.mark.anyio
@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "streamed"])
async def test_a_body_the_app_never_read_does_not_reach_the_next_request(buffered: bool) -> None:
    # Request A's app answers before reading A's large body, and A's client takes the
    # answer slowly; B waits for the only worker. The worker goes to B as soon as A's app
    # is done: no byte of A's body (nor its end, nor an abort) may reach B.
    body_b = bytes(range(256)) * 8192  # 2 MiB
    expected = hashlib.sha256(body_b).hexdigest()
    chunk_a = b"A" * 65536
    answers: dict[str, list[Any]] = {}

    async def call(
        name: str, path: str, chunks: list[bytes], pause: float, trickle: float = 0.0
    ) -> None:
        size = sum(map(len, chunks))
        scope = http_scope(path, "POST", headers=[(b"content-length", str(size).encode())])
        done = anyio.Event()
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            if chunks:
                await anyio.sleep(trickle)
                piece = chunks.pop(0)
                return {"type": "http.request", "body": piece, "more_body": bool(chunks)}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body":
                await anyio.sleep(pause)

        await app(scope, receive, send)
        done.set()
        answers[name] = sent

    app = WsgiToAsgi("apps:early_or_digest", workers=1, buffer_requests=buffered)
    async with app:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "a", "/early", [chunk_a] * 128, 0.5, 0.005)  # 8 MiB
                await anyio.sleep(0.1)
                pieces = [body_b[i : i + 65536] for i in range(0, len(body_b), 65536)]
                tg.start_soon(call, "b", "/", pieces, 0.0, 0.003)
        assert answers["a"][0]["status"] == 401
        assert answers["b"][0]["status"] == 200
        result = json.loads(b"".join(m.get("body", b"") for m in answers["b"][1:]))
        assert (result["size"], result["sha256"]) == (len(body_b), expected)
        assert app.stats().restarts == {}
