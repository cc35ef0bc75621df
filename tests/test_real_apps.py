"""A real Django project (admin login and logout with CSRF and session cookies, a
multipart upload, the admin's CSS through WhiteNoise) and a real Flask app (a session
cookie, a file upload), each through every host: ``wsgipool serve``, and ``WsgiToAsgi``
under uvicorn (h11 and httptools), hypercorn (asyncio and trio) and Granian, with a real
HTTP client on loopback. One pool of one worker per host serves both apps."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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
DJANGO_PROJECT = TESTS.parent / "examples" / "django"
APP = "realapps:application"
PASSWORD = "a-long-test-password"
HOSTS = ["wsgipool-serve", "uvicorn-h11", "uvicorn-httptools", "hypercorn-asyncio",
         "hypercorn-trio", "granian"]  # fmt: skip


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The Django project's database and static files, made as its README says."""
    data = tmp_path_factory.mktemp("django")
    env = {**os.environ, "DJANGO_DATA_DIR": str(data), "DJANGO_SUPERUSER_PASSWORD": PASSWORD}
    manage = [sys.executable, str(DJANGO_PROJECT / "manage.py")]
    for command in (
        ["migrate"],
        ["collectstatic", "--noinput"],
        ["createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com"],
    ):
        subprocess.run([*manage, *command], env=env, check=True, stdout=subprocess.DEVNULL)
    previous = os.environ.get("DJANGO_DATA_DIR")
    os.environ["DJANGO_DATA_DIR"] = str(data)  # the in-process hosts' workers inherit it
    yield data
    if previous is None:
        del os.environ["DJANGO_DATA_DIR"]
    else:
        os.environ["DJANGO_DATA_DIR"] = previous


def ready(url: str) -> str:
    def up() -> bool:
        try:
            return httpx.get(url + "/-/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 30, f"{url} to be ready")
    return url


@contextlib.contextmanager
def subprocess_host(host: str, tmp_path: Path, data: Path) -> Iterator[str]:
    port = free_port()
    if host == "wsgipool-serve":
        argv = ["wsgipool", "serve", APP, "-w", "1", "-b", f"127.0.0.1:{port}"]
    else:
        (tmp_path / "hosted.py").write_text(
            f"from wsgipool import WsgiToAsgi\napp = WsgiToAsgi({APP!r}, workers=1, health=True)\n"
        )
        argv = host_command(host, "hosted:app", port)
    env = {**python_env(tmp_path, TESTS), "DJANGO_DATA_DIR": str(data)}
    server = ServerProcess(argv, tmp_path / f"{host}.log", port, TESTS, env)
    try:
        yield ready(server.url)
    finally:
        assert server.stop() == 0, server.output()


@contextlib.contextmanager
def served(host: str, tmp_path: Path, data: Path) -> Iterator[str]:
    """The base URL of ``realapps`` served by ``host``."""
    if host in ("wsgipool-serve", "granian"):
        with subprocess_host(host, tmp_path, data) as url:
            yield url
        return
    app = WsgiToAsgi(APP, workers=1, health=True)
    if host.startswith("uvicorn"):
        with UvicornServer(app, http=host.partition("-")[2]) as server:
            yield ready(server.url)
    else:
        with hypercorn_thread(app, host.partition("-")[2]) as url:
            yield ready(url)


def csrf_token(page: httpx.Response) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match is not None, page.text
    return match[1]


def check_django_admin(client: httpx.Client) -> None:
    """Log in to the admin (CSRF cookie and token, then a session cookie), log out."""
    login = client.get("/admin/login/?next=/admin/")
    assert login.status_code == 200
    assert "csrftoken" in client.cookies
    form = {"username": "admin", "password": PASSWORD, "next": "/admin/"}
    done = client.post("/admin/login/?next=/admin/", data={**form, "csrfmiddlewaretoken":
                       csrf_token(login)})  # fmt: skip
    assert done.status_code == 302, done.text
    assert done.headers["location"] == "/admin/"
    assert "sessionid" in client.cookies
    home = client.get("/admin/")
    assert home.status_code == 200
    assert "Site administration" in home.text
    out = client.post("/admin/logout/", data={"csrfmiddlewaretoken": csrf_token(home)})
    assert out.status_code == 200
    assert "Logged out" in out.text
    assert client.get("/admin/").status_code == 302  # back to the login page
    # Without the token, Django's CSRF protection answers (through the pool) with 403.
    assert client.post("/admin/login/", data=form).status_code == 403


def check_django_upload_and_static(client: httpx.Client) -> None:
    upload = client.post(
        "/upload/", data={"title": "report"}, files={"doc": ("a.bin", b"\0\1" * 40_000)}
    )
    assert upload.json() == {
        "fields": {"title": "report"},
        "files": {"doc": {"name": "a.bin", "size": 80_000}},
    }
    css = client.get("/static/admin/css/base.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert b"body" in css.content


def check_flask(client: httpx.Client) -> None:
    assert [client.get("/flask/visits").json()["visits"] for _ in range(3)] == [1, 2, 3]
    assert "session" in client.cookies
    form = client.post("/flask/form", data={"name": "n"}, files={"file": ("f.txt", b"file body")})
    assert form.json() == {"name": "n", "file": "file body"}


@pytest.mark.parametrize("host", HOSTS)
def test_real_apps(host: str, data_dir: Path, tmp_path: Path) -> None:
    with served(host, tmp_path, data_dir) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            check_django_admin(client)
        with httpx.Client(base_url=url, timeout=30) as client:
            check_django_upload_and_static(client)
            check_flask(client)
