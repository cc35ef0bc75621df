"""The adapter driven directly through ASGI, against real worker processes.

Where asgiref's messages are right, ours must be the same message for message, so the
same apps are run through asgiref 3.13's in-process adapter and compared.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import anyio
import pytest
from asgiref.wsgi import WsgiToAsgi as AsgirefWsgiToAsgi

import apps
from asgi_helpers import call_asgi, http_scope
from support import pid_alive
from wsgipool import ConfigError, WsgiToAsgi

pytestmark = pytest.mark.anyio


async def asgiref_messages(app: Any, scope: dict[str, Any], **options: Any) -> list[Any]:
    """asgiref's messages for the same input (asgiref needs asyncio: run it in a thread)."""
    reference = AsgirefWsgiToAsgi(app, **options)
    return await anyio.to_thread.run_sync(asyncio.run, call_asgi(reference, scope))


@pytest.fixture
async def make_app() -> Any:
    """Build adapters that are closed (workers stopped) at the end of the test."""
    made: list[WsgiToAsgi] = []

    def make(app: Any, **options: Any) -> WsgiToAsgi:
        options.setdefault("workers", 1)
        adapter = WsgiToAsgi(app, **options)
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        await adapter.aclose()


@pytest.mark.parametrize(
    "app",
    [apps.hello, apps.long_length, apps.empty_chunks, apps.exc_info_app],
    ids=lambda a: a.__name__,
)
async def test_same_messages_as_asgiref(make_app: Any, app: Any) -> None:
    ours = await call_asgi(make_app(app), http_scope())
    theirs = await asgiref_messages(app, http_scope())
    assert ours == theirs
    assert all(type(h) is tuple for h in ours[0]["headers"])


async def test_pep3333_validator_passes(make_app: Any) -> None:
    # wsgiref's validator raises inside the worker on any PEP 3333 violation by either
    # side, which would turn into a 500; asgiref itself fails it (close() is never called).
    for app in (apps.validated_hello, apps.validated_echo, apps.validated_writer):
        scope = http_scope("/", "POST", headers=[(b"content-length", b"5")])
        messages = await call_asgi(make_app(app), scope, [b"he", b"llo"])
        assert messages[0]["status"] == 200, app


async def test_same_400_as_asgiref_on_duplicate_headers(make_app: Any) -> None:
    scope = http_scope(headers=[(b"x-a", b"1")] * 5)
    ours = await call_asgi(make_app(apps.hello, duplicate_header_limit=4), scope)
    theirs = await asgiref_messages(apps.hello, scope, duplicate_header_limit=4)
    assert ours == theirs
    assert ours[0]["status"] == 400


async def test_no_duplicate_header_limit_serves_what_asgiref_serves(make_app: Any) -> None:
    # asgiref with duplicate_header_limit=None serves any number of fields; so do we
    # (gunicorn's limit_request_fields stays on by default and in ``wsgipool serve``).
    scope = http_scope(headers=[(b"x-a", b"1")] * 150)
    ours = await call_asgi(make_app(apps.hello, duplicate_header_limit=None), scope)
    theirs = await asgiref_messages(apps.hello, scope, duplicate_header_limit=None)
    assert ours == theirs
    assert ours[0]["status"] == 200
    scope = http_scope(headers=[(b"x-%d" % n, b"1") for n in range(150)])
    assert (await call_asgi(make_app(apps.hello), scope))[0]["status"] == 431
    limited = make_app(apps.hello, duplicate_header_limit=None, limit_request_fields=120)
    assert (await call_asgi(limited, scope))[0]["status"] == 431


async def test_runs_in_another_process(make_app: Any) -> None:
    messages = await call_asgi(make_app(apps.pid))
    worker_pid = int(messages[1]["body"])
    assert worker_pid != os.getpid()


async def test_app_defined_inside_test_function(make_app: Any) -> None:
    greeting = b"from a closure"

    def local_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [greeting, str(os.getpid()).encode()]

    messages = await call_asgi(make_app(local_app))
    assert messages[1]["body"] == greeting
    assert int(messages[2]["body"]) != os.getpid()


async def test_lambda_app(make_app: Any) -> None:
    app = make_app(lambda environ, start: (start("200 OK", []), [b"lambda"])[1])
    messages = await call_asgi(app)
    assert messages[1]["body"] == b"lambda"


async def test_import_string_with_dotted_attribute(make_app: Any) -> None:
    messages = await call_asgi(make_app("apps:Holder.app.wsgi"))
    assert messages[0]["status"] == 200
    assert messages[1]["body"] == b"held"


async def test_bound_method_of_module_object_travels_by_name(make_app: Any) -> None:
    adapter = make_app(apps.holder.wsgi)
    assert adapter.spec == {"kind": "import", "ref": "apps:holder.wsgi"}
    messages = await call_asgi(adapter)
    assert messages[1]["body"] == b"held"


def test_unpicklable_app_is_a_clear_error_at_construction() -> None:
    import threading

    lock = threading.Lock()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        with lock:
            return []

    with pytest.raises(ConfigError, match="cannot send"):
        WsgiToAsgi(app)


def test_bad_options_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        WsgiToAsgi(apps.hello, wrokers=2)
    with pytest.raises(ConfigError, match=r"^workers must be at least 1, got 0$"):
        WsgiToAsgi(apps.hello, workers=0)
    with pytest.raises(ConfigError, match=r"^workers must be at least 1, got '2'$"):
        WsgiToAsgi(apps.hello, workers="2")
    with pytest.raises(ConfigError, match=r"^max_rss must be a size such as 512MiB"):
        WsgiToAsgi(apps.hello, max_rss="lots")
    with pytest.raises(ConfigError, match=r"^log_level must be one of critical, error, "):
        WsgiToAsgi(apps.hello, log_level="loud")
    with pytest.raises(ConfigError, match=r"package\.module:attribute"):
        WsgiToAsgi("not an import string")


async def test_write_callable_and_close(make_app: Any, tmp_path: Any) -> None:
    messages = await call_asgi(make_app(apps.writer))
    assert [m.get("body") for m in messages[1:]] == [b"one,", b"two,", b"three", None]
    marker = tmp_path / "closed"
    scope = http_scope("/", query_string=f"marker={marker}".encode())
    messages = await call_asgi(make_app(apps.closing), scope)
    assert messages[-1] == {"type": "http.response.body"}
    assert marker.read_text() == "closed"


async def test_latin1_response_headers(make_app: Any) -> None:
    messages = await call_asgi(make_app(apps.latin1_headers))
    assert (b"x-name", "caf\xe9".encode("latin-1")) in messages[0]["headers"]


async def test_streams_request_body_in_chunks(make_app: Any) -> None:
    app = make_app(apps.echo)
    body = [b"line one\n", b"line ", b"two\nlast line"]
    for mode, expected in [
        ("read", b"line one\nline two\nlast line"),
        ("readline", b"line one\n|line two\n|last line"),
        ("lines", b"line one\n|line two\n|last line"),
        ("iter", b"line one\n|line two\n|last line"),
        ("3", b"line one\nline two\nlast line"),
    ]:
        scope = http_scope("/", "POST", query_string=f"mode={mode}".encode())
        messages = await call_asgi(app, scope, body)
        assert messages[1]["body"] == expected, mode


async def test_lifespan_starts_and_stops_workers(make_app: Any) -> None:
    import anyio

    app = make_app(apps.pid, workers=2)
    events: list[str] = []
    to_app = [{"type": "lifespan.startup"}]
    shutdown = anyio.Event()

    async def receive() -> dict[str, Any]:
        if to_app:
            return to_app.pop()
        await shutdown.wait()
        return {"type": "lifespan.shutdown"}

    async def send(message: dict[str, Any]) -> None:
        events.append(message["type"])

    async with anyio.create_task_group() as tg:
        tg.start_soon(app, {"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
        with anyio.fail_after(30):
            while "lifespan.startup.complete" not in events:
                await anyio.sleep(0.01)
        assert len(app.stats().idle) == 2
        pids = {w.pid for w in app.stats().idle}
        shutdown.set()
    assert events == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    for pid in pids:
        assert not pid_alive(pid)


async def test_lifespan_reports_import_failure(make_app: Any) -> None:
    app = make_app("no_such_module_here:app")
    sent: list[dict[str, Any]] = []
    queue = [{"type": "lifespan.startup"}]

    async def receive() -> dict[str, Any]:
        return queue.pop()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert "No module named 'no_such_module_here'" in sent[0]["message"]


async def test_non_http_scope_is_refused(make_app: Any) -> None:
    with pytest.raises(ValueError, match="non-HTTP"):
        await make_app(apps.hello)({"type": "websocket"}, None, None)


async def test_dropped_adapter_leaves_no_process() -> None:
    import gc

    adapter = WsgiToAsgi(apps.pid, workers=1)
    messages = await call_asgi(adapter)
    pid = int(messages[1]["body"])
    assert pid_alive(pid)
    del adapter, messages
    gc.collect()
    with anyio.fail_after(10):
        while pid_alive(pid):
            await anyio.sleep(0.01)


async def test_large_single_message_body_that_the_app_ignores(make_app: Any) -> None:
    # The whole 4 MiB body arrives in the first message and the app answers 4 MiB without
    # reading it: neither side may wait on the other's pipe, and the app runs once.
    app = make_app(apps.download)
    scope = http_scope("/", "POST", query_string=b"mib=4")
    with anyio.fail_after(30):
        messages = await call_asgi(app, scope, [b"x" * (4 << 20)])
    assert messages[0]["status"] == 200
    assert sum(len(m.get("body", b"")) for m in messages[1:]) == 4 << 20
    assert app.stats().restarts == {}


async def test_slow_client_does_not_count_against_the_timeout(make_app: Any) -> None:
    app = make_app(apps.download, timeout=0.5)
    sent: list[int] = []

    async def slow_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            await anyio.sleep(0.3)  # 16 chunks: far longer than the timeout in all
        sent.append(len(message.get("body", b"")))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    await app.start()
    await app(http_scope("/", query_string=b"mib=1"), receive, slow_send)
    assert sum(sent) == 1 << 20
    assert app.stats().restarts == {}


async def test_client_leaving_before_the_first_frame_is_noticed(
    make_app: Any,
) -> None:
    # No request deadline: only the disconnect (and its grace) ends it.
    app = make_app(apps.fail, timeout=None, abort_grace=0.5)
    sent: list[dict[str, Any]] = []
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await anyio.sleep(0.3)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = http_scope("/", query_string=b"how=sleep&s=60")  # blocks before start_response
    with anyio.fail_after(20):
        await app(scope, receive, send)
    assert app.stats().restarts == {"stuck after disconnect": 1}


async def test_queued_requests_each_get_their_own_answer(make_app: Any) -> None:
    """One worker and a dozen requests at once: each queued request's frames go into the
    worker's pipe as the worker is handed over, and every answer is still its own
    request's, also around requests whose clients leave while they wait."""
    app = make_app(apps.environ_json, workers=1)
    answers: dict[int, str] = {}

    async def request(n: int) -> None:
        messages = await call_asgi(app, http_scope(f"/r{n}"))
        answers[n] = json.loads(b"".join(m.get("body", b"") for m in messages[1:]))["PATH_INFO"]

    async def leaving(n: int) -> None:
        # Every other one with a body the front spools (more than goes with the request).
        body = b"x" * (100_000 if n % 8 == 7 else 0)
        headers = [(b"host", b"testserver"), (b"content-length", str(len(body)).encode())]
        scope = http_scope(f"/gone{n}", "POST", headers=headers)
        queue: list[dict[str, Any]] = [{"type": "http.request", "body": body}]

        async def receive() -> dict[str, Any]:
            if queue:
                return queue.pop(0)
            for _ in range(n):  # leave after a while: some once a worker is theirs
                await anyio.sleep(0)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            pass

        await app(scope, receive, send)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for n in range(24):
                tg.start_soon(leaving if n % 4 == 3 else request, n)
    assert answers == {n: f"/r{n}" for n in range(24) if n % 4 != 3}
    assert not app.stats().restarts  # no worker was killed for a client that left
