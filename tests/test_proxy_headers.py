"""Proxy headers are applied by the adapter, so every ASGI server gets them alike."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import (
    ServerProcess,
    UvicornServer,
    free_port,
    host_command,
    hypercorn_thread,
    python_env,
    wait_for,
)
from wsgipool import WsgiToAsgi

TESTS = Path(__file__).parent
HOSTS = ["uvicorn-h11", "uvicorn-httptools", "hypercorn-asyncio", "hypercorn-trio", "granian"]
#: Only 127.0.0.1 is trusted: a client from 127.0.0.2 (also loopback) is not.
OPTIONS: dict[str, Any] = {
    "workers": 1, "proxy_headers": True, "forwarded_allow_ips": "127.0.0.1",
    "trusted_proxy_headers": "forwarded,x-forwarded-for,x-forwarded-proto,"
    "x-forwarded-host,x-forwarded-port,x-forwarded-prefix",
}  # fmt: skip
X_FORWARDED = {
    "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "shop.example", "X-Forwarded-Port": "8443",
    "X-Forwarded-Prefix": "/shop",
}  # fmt: skip
FORWARDED = {"Forwarded": 'for="[2001:db8::17]:4711";proto=https;host=www.example'}


@contextlib.contextmanager
def hosted(host: str, tmp_path: Path) -> Iterator[str]:
    """The URL of ``apps:environ_json`` behind the adapter, on ``host``."""
    if host == "granian":  # a process of its own: it imports the ASGI app by name
        (tmp_path / "proxied.py").write_text(
            "from wsgipool import WsgiToAsgi\n"
            f"app = WsgiToAsgi('apps:environ_json', **{OPTIONS!r})\n"
        )
        port = free_port()
        argv = host_command(host, "proxied:app", port)
        server = ServerProcess(argv, tmp_path / "granian.log", port, TESTS,
                               python_env(tmp_path, TESTS))  # fmt: skip
        try:
            yield server.ready("/").url
        finally:
            server.stop()
        return
    app = WsgiToAsgi("apps:environ_json", **OPTIONS)
    if host.startswith("uvicorn"):
        # uvicorn's own proxy middleware is off: the adapter alone reads the headers.
        with UvicornServer(app, http=host.partition("-")[2], proxy_headers=False) as server:
            yield server.url
    else:
        with hypercorn_thread(app, host.partition("-")[2]) as url:
            wait_for(lambda: reachable(url), 30, "hypercorn")
            yield url


def reachable(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def environ_from(url: str, headers: dict[str, str], source: str = "127.0.0.1") -> dict[str, Any]:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=30) as client:
        response = client.get(url + "/page", headers=headers)
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


@pytest.mark.parametrize("host", HOSTS)
def test_trusted_proxies_set_the_environ_and_untrusted_ones_change_nothing(
    host: str, tmp_path: Path
) -> None:
    with hosted(host, tmp_path) as url:
        port = url.rpartition(":")[2]
        env = environ_from(url, X_FORWARDED)
        assert env["REMOTE_ADDR"] == "203.0.113.9"
        assert "REMOTE_PORT" not in env  # the header has none: the proxy's own would mislead
        assert env["wsgi.url_scheme"] == "https"
        assert env["HTTP_HOST"] == "shop.example:8443"
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("shop.example", "8443")
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/shop", "/page")

        env = environ_from(url, FORWARDED)
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("2001:db8::17", "4711")
        assert (env["wsgi.url_scheme"], env["HTTP_HOST"]) == ("https", "www.example")
        assert env["SERVER_PORT"] == "443"

        plain = environ_from(url, {}, source="127.0.0.2")
        for headers in (X_FORWARDED, FORWARDED):
            env = environ_from(url, headers, source="127.0.0.2")
            assert env["REMOTE_ADDR"] == "127.0.0.2"
            assert env["REMOTE_PORT"].isdigit()
            same = ("wsgi.url_scheme", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "SCRIPT_NAME")
            assert {k: env[k] for k in same} == {k: plain[k] for k in same}
            assert env["SERVER_PORT"] == port
            assert not [key for key in env if "FORWARDED" in key]

        # A trusted proxy's Forwarded element that cannot be read: 400, no guess.
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.1")) as client:
            bad = client.get(url + "/page", headers={"Forwarded": "for=a b"}, timeout=30)
        assert bad.status_code == 400
        assert "Forwarded header is malformed" in bad.text


def test_off_by_default_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    app = WsgiToAsgi("apps:environ_json", workers=1)
    with caplog.at_level(logging.WARNING, "wsgipool.front"), UvicornServer(
        app, proxy_headers=False
    ) as server:  # fmt: skip
        for _ in range(2):
            env = environ_from(server.url, X_FORWARDED)
            assert env["REMOTE_ADDR"] == "127.0.0.1"  # not 203.0.113.9
            assert env["wsgi.url_scheme"] == "http"
            assert env["HTTP_X_FORWARDED_HOST"] == "shop.example"  # off: left as it came
    said = [r.getMessage() for r in caplog.records if "proxy headers are off" in r.getMessage()]
    assert len(said) == 1
    assert "from 127.0.0.1 carries x-forwarded-for, x-forwarded-proto" in said[0]
    assert "--proxy-headers" in said[0]
