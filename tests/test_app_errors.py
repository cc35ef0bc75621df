"""An exception of the app reaches the ASGI caller as itself, its own class (asgiref's
behaviour), with the app's traceback as ``__cause__``, before and after the headers;
``AppError`` when it cannot travel; a worker that
dies mid-response raises too; the worker that raised keeps serving. A response message
the server refuses costs no worker either.

Driven directly through ASGI, through Starlette's TestClient, and under real uvicorn (h11
and httptools) and hypercorn servers on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import warnings
from typing import Any

import anyio
import httpx
import pytest

import apps
from asgi_helpers import call_asgi, http_scope
from support import Reader, connect, hypercorn_thread, wait_for
from wsgipool import AppError, RemoteTraceback, WorkerGoneError, WsgiToAsgi

with warnings.catch_warnings():  # Starlette asks for httpx2 over httpx; both work here
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

HTTP = pytest.mark.parametrize("http", ["h11", "httptools"])


def fail_scope(how: str) -> dict[str, Any]:
    return http_scope(query_string=f"how={how}".encode())


def pids(app: WsgiToAsgi) -> set[int]:
    wait_for(lambda: not app.stats().busy, what="every worker idle")
    return {w.pid for w in app.stats().workers}


@pytest.mark.anyio
async def test_error_before_headers_is_raised_with_the_apps_traceback() -> None:
    async with WsgiToAsgi("apps:fail", workers=1) as app:
        before = pids(app)
        sent: list[dict[str, Any]] = []
        with pytest.raises(RuntimeError) as info:
            await call_asgi(app, fail_scope("raise"), sent=sent)
        assert sent == []  # nothing was sent: the server answers 500 itself
        assert type(info.value) is RuntimeError
        assert str(info.value) == "boom before headers"
        cause = info.value.__cause__
        assert isinstance(cause, RemoteTraceback)
        text = str(cause)
        assert text.startswith("Traceback (most recent call last)")
        assert "apps.py" in text
        assert 'raise RuntimeError("boom before headers")' in text
        # The same worker serves the next request.
        served = await call_asgi(app, fail_scope("sleep&s=0"))
        assert served[0]["status"] == 200
        assert pids(app) == before
        assert app.stats().restarts == {}


@pytest.mark.anyio
async def test_error_after_headers_is_raised_after_the_start_message() -> None:
    async with WsgiToAsgi("apps:fail", workers=1) as app:
        before = pids(app)
        sent: list[dict[str, Any]] = []
        with pytest.raises(RuntimeError, match="boom midway") as info:
            await call_asgi(app, fail_scope("midway"), sent=sent)
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
        assert sent[0]["status"] == 200
        assert (sent[1]["body"], sent[1]["more_body"]) == (b"first", True)
        assert "in _midway" in str(info.value.__cause__)
        assert (await call_asgi(app, fail_scope("sleep&s=0")))[0]["status"] == 200
        assert pids(app) == before
        assert app.stats().restarts == {}


@pytest.mark.anyio
async def test_worker_killed_mid_response_raises() -> None:
    async with WsgiToAsgi("apps:stream_then_hang", workers=1) as app:
        sent: list[dict[str, Any]] = []
        never = anyio.Event()

        async def receive() -> dict[str, Any]:
            if not sent:
                return {"type": "http.request", "body": b"", "more_body": False}
            await never.wait()  # the client stays
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body":  # the first chunk is out
                headers = dict(sent[0]["headers"])
                os.kill(int(headers[b"x-worker-pid"]), signal.SIGKILL)

        with pytest.raises(WorkerGoneError):
            await app(http_scope(), receive, send)
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
        wait_for(lambda: app.stats().restarts == {"crashed": 1}, what="the worker replaced")


@pytest.mark.anyio
async def test_the_apps_own_class_travels_and_what_cannot_is_app_error() -> None:
    async with WsgiToAsgi("apps:fail", workers=1) as app:
        with pytest.raises(apps.AppSpecificError) as own:
            await call_asgi(app, fail_scope("own"))
        assert (str(own.value), own.value.code) == ("an error of the app's own", 42)
        assert "in fail" in str(own.value.__cause__)
        with pytest.raises(FileNotFoundError) as os_error:
            await call_asgi(app, fail_scope("os"))
        assert (os_error.value.errno, os_error.value.filename) == (2, "/nowhere")
        # No pickle (a lock), or no unpickle (other __init__ arguments): AppError, the text.
        with pytest.raises(AppError, match="carries a lock") as info:
            await call_asgi(app, fail_scope("unpicklable"))
        assert isinstance(info.value.__cause__, RemoteTraceback)
        with pytest.raises(AppError, match="NeedsTwoArguments: one two"):
            await call_asgi(app, fail_scope("no-unpickle"))
        assert app.stats().restarts == {}


def test_unpickling_names_only_exceptions_of_modules_already_imported() -> None:
    # The front never imports the app's code, and a pickle can name no other callable.
    import pickle

    from wsgipool._wire.remote import dump, load

    class Sneaky:
        def __reduce__(self) -> Any:
            return (os.system, ("true",))

    assert isinstance(load("m\ntb", pickle.dumps(Sneaky()), trusted=True), AppError)
    smuggled = pickle.dumps(ValueError(Sneaky()))
    assert isinstance(load("m\ntb", smuggled, trusted=True), AppError)
    unknown = dump(ValueError("x")).replace(b"builtins", b"xbuiltin")  # type: ignore[union-attr]
    assert isinstance(load("m\ntb", unknown, trusted=True), AppError)
    plain = dump(KeyError("k", [1, 2], {3}))
    assert type(load("m\ntb", plain, trusted=True)) is KeyError
    # A worker that runs as another user is not trusted with a pickle at all.
    assert isinstance(load("m\ntb", plain, trusted=False), AppError)


def test_starlette_testclient_raises_the_apps_error() -> None:
    app = WsgiToAsgi("apps:fail", workers=1)
    with TestClient(app) as client:
        with pytest.raises(RuntimeError, match="boom before headers"):
            client.get("/", params={"how": "raise"})
        with pytest.raises(ValueError, match="a value error of the app"):
            client.get("/", params={"how": "value"})
        with pytest.raises(RuntimeError, match="boom midway"):
            client.get("/", params={"how": "midway"})
        assert client.get("/", params={"how": "sleep", "s": "0"}).status_code == 200
    assert app.stats().restarts == {}


@HTTP
def test_under_uvicorn_the_server_answers_500(serve: Any, http: str) -> None:
    app = WsgiToAsgi("apps:fail", workers=1)
    with serve(app, http=http) as server, server.client() as client:
        before = pids(app)
        response = client.get("/", params={"how": "raise"})
        assert response.status_code == 500
        assert response.headers["connection"] == "close"  # uvicorn's own 500
        assert client.get("/", params={"how": "sleep", "s": "0"}).status_code == 200
        assert pids(app) == before
    assert app.stats().restarts == {}


@HTTP
def test_respond_answers_500_itself_and_logs(serve: Any, http: str, caplog: Any) -> None:
    app = WsgiToAsgi("apps:fail", workers=1, app_errors="respond")
    with serve(app, http=http) as server, server.client() as client:
        response = client.get("/", params={"how": "raise"})
        assert (response.status_code, response.text) == (500, "Internal Server Error")
        assert "connection" not in response.headers  # ours: the connection is kept
        assert client.get("/", params={"how": "sleep", "s": "0"}).status_code == 200
    assert "boom before headers" in caplog.text
    assert app.stats().restarts == {}


def test_under_hypercorn_the_server_answers_500() -> None:
    app = WsgiToAsgi("apps:fail", workers=1)
    with hypercorn_thread(app, "asyncio") as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/", params={"how": "raise"}).status_code == 500
        assert client.get("/", params={"how": "sleep", "s": "0"}).status_code == 200
    assert app.stats().restarts == {}


@pytest.mark.parametrize("how", ["204", "204-endless", "1xx"])
def test_a_response_the_server_refuses_costs_no_worker(serve: Any, how: str, caplog: Any) -> None:
    app = WsgiToAsgi("apps:refused", workers=1)
    with serve(app, http="h11") as server:
        before = pids(app)
        with connect(server.port) as sock:
            sock.sendall(f"GET /?how={how} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            reader = Reader(sock)
            if how != "1xx":  # the head went out; h11 refused the body
                assert reader.head()[0] == 204
            assert reader.closed()  # the response was cut where h11 refused it
        assert reader.raw.startswith(b"HTTP/1.1 204 ") if how != "1xx" else reader.raw == b""
        assert "the server refused the response to GET /" in caplog.text
        # The next request, on a fresh connection, is served by the same worker.
        response = httpx.get(server.url, timeout=10)
        assert response.text == str(*before)
        assert pids(app) == before
    assert app.stats().restarts == {}
