"""The front's own endpoints under ``/-/``: probes, Prometheus metrics, the status page."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from asgi_helpers import call_asgi, http_scope
from support import wait_for
from wsgipool import ConfigError, WsgiToAsgi

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of a Prometheus exposition, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(found: Samples, name: str) -> float:
    return sum(value for (sample, _), value in found.items() if sample == name)


@pytest.fixture
async def make_app() -> AsyncIterator[Callable[..., WsgiToAsgi]]:
    made: list[WsgiToAsgi] = []

    def make(app: str = "apps:hello", **options: Any) -> WsgiToAsgi:
        options.setdefault("workers", 1)
        made.append(WsgiToAsgi(app, **options))
        return made[-1]

    yield make
    for adapter in made:
        await adapter.aclose()


async def get(app: WsgiToAsgi, path: str, **scope: Any) -> tuple[int, dict[bytes, bytes], bytes]:
    start, *bodies = await call_asgi(app, http_scope(path, **scope))
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in bodies)


# -- probes ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_endpoints_are_off_by_default(make_app: Callable[..., WsgiToAsgi]) -> None:
    app = make_app()
    for path in ("/-/healthz", "/-/readyz", "/-/metrics", "/-/status"):
        assert await get(app, path) == (200, {
            b"content-type": b"text/plain", b"content-length": b"13"
        }, b"Hello, world!")  # fmt: skip


@pytest.mark.anyio
async def test_probes_follow_the_pool(make_app: Callable[..., WsgiToAsgi]) -> None:
    app = make_app(health=True)
    status, headers, body = await get(app, "/-/healthz")
    assert (status, headers[b"content-type"]) == (200, b"application/json")
    status, _, body = await get(app, "/-/readyz")  # no worker yet (no lifespan, no request)
    assert status == 503
    assert b'"status": "unavailable"' in body
    await app.start()
    status, _, body = await get(app, "/-/readyz")
    assert status == 200
    assert b'"workers": 1' in body
    assert await get(app, "/") == (200, {
        b"content-type": b"text/plain", b"content-length": b"13"
    }, b"Hello, world!")  # fmt: skip
    status, _, body = await get(app, "/-/readyz", method="HEAD")
    assert (status, body) == (200, b"")
    status, headers, _ = await get(app, "/-/readyz", method="POST")
    assert (status, headers[b"allow"]) == (405, b"GET, HEAD")
    # Below root_path, as the app's own paths are; elsewhere the path is the app's.
    assert (await get(app, "/legacy/-/readyz", root_path="/legacy"))[0] == 200
    assert (await get(app, "/other/-/readyz", root_path="/legacy"))[2] == b"Hello, world!"
    await app.aclose()
    status, _, body = await get(app, "/-/readyz")
    assert status == 503
    assert b'"closing": true' in body


def test_probes_answer_while_every_worker_is_busy(serve: Any) -> None:
    app = WsgiToAsgi("apps:fail", workers=1, health=True)
    with serve(app) as server, server.client() as client:
        slow = threading.Thread(target=client.get, args=("/?how=sleep&s=1",))
        slow.start()
        wait_for(lambda: client.get("/-/readyz").json()["busy"] == 1, what="a busy worker")
        assert client.get("/-/healthz", timeout=0.5).status_code == 200
        assert client.get("/-/readyz", timeout=0.5).status_code == 200  # busy counts as up
        slow.join(30)


# -- metrics -----------------------------------------------------------------------------


def test_metrics_count_requests_latency_queue_workers_restarts_and_memory(serve: Any) -> None:
    app = WsgiToAsgi("apps:fail", workers=1, metrics=True, max_body_size=10)
    with serve(app) as server, server.client() as client:
        assert client.get("/?how=sleep&s=0").status_code == 200
        assert client.get("/?how=raise").status_code == 500
        assert client.post("/", content=b"x" * 100).status_code == 413
        assert client.get("/?how=sigkill").status_code == 502
        slow = [threading.Thread(target=client.get, args=("/?how=sleep&s=1",)) for _ in "ab"]
        for thread in slow:
            thread.start()

        def one_busy_one_queued() -> bool:
            found = samples(client.get("/-/metrics").text)
            busy = found[("wsgipool_workers", (("state", "busy"),))]
            return (busy, found[("wsgipool_queue_depth", ())]) == (1, 1)

        wait_for(one_busy_one_queued, what="a busy worker and a queued request")
        found = samples(client.get("/-/metrics").text)
        assert found[("wsgipool_workers", (("state", "idle"),))] == 0
        assert found[("wsgipool_workers_target", ())] == 1
        for thread in slow:
            thread.join(30)
        response = client.get("/-/metrics")
        assert response.headers["content-type"].startswith("text/plain; version=")
        found = samples(response.text)
    for status, count in {"2xx": 3, "4xx": 1, "5xx": 2}.items():
        assert found[("wsgipool_requests_total", (("status", status),))] == count
    assert found[("wsgipool_request_duration_seconds_count", ())] == 6
    assert found[("wsgipool_request_duration_seconds_sum", ())] >= 2.0  # the two slow ones
    assert total(found, "wsgipool_worker_restarts_total") >= 1  # the SIGKILLed worker
    [(labels, rss)] = [(k[1], v) for k, v in found.items() if k[0] == "wsgipool_worker_rss_bytes"]
    assert dict(labels)["worker"] == "1"
    assert 1 << 20 < rss < 1 << 30


@pytest.mark.anyio
async def test_each_adapter_has_its_own_registry(make_app: Callable[..., WsgiToAsgi]) -> None:
    first = make_app(metrics=True)
    second = make_app(metrics=True, metrics_path="/internal/metrics")
    for _ in range(3):
        await get(first, "/")
    await get(second, "/")
    counted = samples((await get(first, "/-/metrics"))[2].decode())
    assert counted[("wsgipool_requests_total", (("status", "2xx"),))] == 3
    counted = samples((await get(second, "/internal/metrics"))[2].decode())
    assert counted[("wsgipool_requests_total", (("status", "2xx"),))] == 1
    assert (await get(second, "/-/metrics"))[2] == b"Hello, world!"


def test_metrics_without_prometheus_client_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    with pytest.raises(ConfigError, match=r"pip install 'wsgipool\[metrics\]'"):
        WsgiToAsgi("apps:hello", metrics=True)
    with pytest.raises(ConfigError, match="metrics_path"):
        WsgiToAsgi("apps:hello", metrics_path="metrics")


# -- the status page ---------------------------------------------------------------------


def test_status_page_lists_the_workers(serve: Any) -> None:
    app = WsgiToAsgi("apps:pid", workers=2, status=True)
    with serve(app) as server, server.client() as client:
        pids = {client.get("/").text for _ in range(6)}
        page = client.get("/-/status")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "wsgipool serving <code>apps:pid</code>" in page.text
    assert "2 of 2 workers up" in page.text
    for pid in pids:
        assert f"<td>{pid}</td>" in page.text
    assert page.text.count('class="state idle"') == 2


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    chromium() is None, reason="chromium is not installed (apt-get install -y chromium)"
)
def test_status_page_in_a_headless_browser(serve: Any, tmp_path: Path) -> None:
    app = WsgiToAsgi("apps:pid", workers=2, status=True)
    with serve(app) as server, server.client() as client:
        pid = client.get("/").text
        browser = [
            str(chromium()), "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
        ]  # fmt: skip
        shot = tmp_path / "status.png"
        url = server.url + "/-/status"

        def run(*args: str) -> str:
            done = subprocess.run(
                [*browser, *args, url], capture_output=True, text=True, timeout=60, check=True
            )
            return done.stdout

        run(f"--screenshot={shot}", "--window-size=900,500")
        dom = run("--dump-dom")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    assert "<title>wsgipool: apps:pid</title>" in dom
    assert f"<td>{pid}</td>" in dom
    assert dom.count('class="state idle"') == 2
