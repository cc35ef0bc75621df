"""Through a real uvicorn on 127.0.0.1 with a real HTTP client (httpx)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import MiB, PeakRSS
from wsgipool import WsgiToAsgi


def test_hello_under_uvicorn(serve: Any) -> None:
    with serve(WsgiToAsgi("apps:hello", workers=2)) as server, server.client() as client:
        for _ in range(20):
            response = client.get("/")
            assert response.status_code == 200
            assert response.text == "Hello, world!"
            assert response.headers["content-length"] == "13"


def test_workers_serve_in_parallel(serve: Any) -> None:
    app = WsgiToAsgi("apps:fail", workers=2)
    with serve(app) as server:
        started = time.monotonic()
        threads = [
            threading.Thread(target=httpx.get, args=(server.url + "/?how=sleep&s=1",))
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Two 1 s requests on two workers overlap; one worker would need 2 s.
        assert time.monotonic() - started < 1.9


def test_environ_through_uvicorn(serve: Any) -> None:
    app = WsgiToAsgi("apps:environ_json", workers=1)
    with serve(app, root_path="/app") as server, server.client() as client:
        response = client.get(
            "/x/caf%C3%A9",  # a proxy stripped /app; uvicorn puts it back in path
            params={"q": "1"},
            headers={"X-Multi": "a", "Cookie": "a=1"},
        )
        env = response.json()
    assert env["SCRIPT_NAME"] == "/app"
    assert env["PATH_INFO"] == "/x/caf\xc3\xa9"  # UTF-8 bytes as latin-1: a native string
    assert env["QUERY_STRING"] == "q=1"
    assert env["HTTP_X_MULTI"] == "a"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["wsgi.multithread"] is False
    assert env["wsgi.multiprocess"] is True
    assert env["wsgi.input_terminated"] is True
    assert env["has_file_wrapper"] is True
    assert "CONTENT_LENGTH" not in env


def test_chunked_upload_without_content_length(serve: Any) -> None:
    def body() -> Iterator[bytes]:
        yield b"hello "
        yield b"chunked"

    with serve(WsgiToAsgi("apps:echo", workers=1)) as server, server.client() as client:
        response = client.post("/", content=body())
        assert response.content == b"hello chunked"


def test_100_mib_upload_streams_with_bounded_memory(serve: Any) -> None:
    block = b"u" * MiB

    def body() -> Iterator[bytes]:
        for _ in range(100):
            yield block

    with serve(WsgiToAsgi("apps:upload_size", workers=1)) as server, server.client() as client:
        with PeakRSS() as peak:
            response = client.post("/", content=body(), headers={"content-length": str(100 * MiB)})
        assert response.text == str(100 * MiB)
    assert peak.growth < 40 * MiB, f"front grew by {peak.growth / MiB:.1f} MiB"


def test_100_mib_download_streams_with_bounded_memory(serve: Any) -> None:
    with serve(WsgiToAsgi("apps:download", workers=1)) as server, server.client() as client:
        with PeakRSS() as peak, client.stream("GET", "/?mib=100") as response:
            total = sum(len(chunk) for chunk in response.iter_raw(65536))
        assert total == 100 * MiB
    assert peak.growth < 40 * MiB, f"front grew by {peak.growth / MiB:.1f} MiB"


def test_file_wrapper(serve: Any, tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)
    with serve(WsgiToAsgi("apps:file_response", workers=1)) as server, server.client() as client:
        response = client.get("/", params={"path": str(path)})
        assert response.content == data


def test_stdout_of_the_app_does_not_reach_the_channel(serve: Any, capfd: Any) -> None:
    with serve(WsgiToAsgi("apps:printer", workers=1)) as server, server.client() as client:
        assert client.get("/").text == "quiet"
        assert client.get("/").text == "quiet"
    err = capfd.readouterr().err
    assert "noise on stdout" in err


def test_disconnect_stops_endless_response_and_calls_close(serve: Any, tmp_path: Path) -> None:
    marker = tmp_path / "closed"
    app = WsgiToAsgi("apps:endless", workers=1)
    with serve(app) as server:
        with (
            httpx.Client(base_url=server.url, timeout=10) as client,
            client.stream("GET", "/", params={"marker": str(marker)}) as response,
        ):
            assert next(response.iter_raw()).startswith(b"tick")
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.read_text() == "closed"
        # The same worker is free again and serves the next request.
        with (
            httpx.Client(base_url=server.url, timeout=10) as client,
            client.stream("GET", "/", params={"marker": str(tmp_path / "2")}) as response,
        ):
            assert next(response.iter_raw()).startswith(b"tick")
        assert app.stats().restarts == {}


def test_app_errors_become_500_and_worker_keeps_serving(serve: Any, caplog: Any) -> None:
    app = WsgiToAsgi("apps:fail", workers=1, app_errors="respond")
    with serve(app) as server, server.client() as client:
        pids = set()
        for how in ("raise", "status", "header", "latin1", "str", "no-start"):
            response = client.get("/", params={"how": how})
            assert response.status_code == 500, how
            assert response.text == "Internal Server Error"
        pids = {w.pid for w in app.stats().idle}
        assert len(pids) == 1
    assert "boom before headers" in caplog.text
    assert "GET /" in caplog.text
    assert app.stats().restarts == {}


def test_error_midway_cuts_the_response_off(serve: Any) -> None:
    with serve(WsgiToAsgi("apps:fail", workers=1)) as server, server.client() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/", params={"how": "midway"})
        assert client.get("/", params={"how": "raise"}).status_code == 500
