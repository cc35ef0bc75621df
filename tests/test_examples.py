"""Each example in ``examples/``, started with the very command the README gives for it,
through a real server on loopback."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from support import free_port, wait_for

ROOT = Path(__file__).parent.parent
FLASK = "wsgipool serve --chdir examples/flask app:app --workers 2"
DJANGO = "wsgipool serve --chdir examples/django mysite.wsgi:application --workers 2"
DJANGO_SETUP = (
    "python examples/django/manage.py migrate",
    "python examples/django/manage.py collectstatic --noinput",
)
MIXED = "uvicorn --app-dir examples/mixed app:app"


def documented(command: str) -> bool:
    docs = [ROOT / "README.md", ROOT / "docs" / "README-cli.md"]
    return any(command in path.read_text() for path in docs if path.exists())


def script(command: str) -> list[str]:
    """``command`` as argv, its first word this venv's script (or interpreter)."""
    argv = shlex.split(command)
    argv[0] = (
        sys.executable if argv[0] == "python" else str(Path(sys.executable).with_name(argv[0]))
    )
    return argv


def django_setup(data: Path) -> dict[str, str]:
    """Run the README's set-up commands of the Django example; the environment they used."""
    env = {"DJANGO_DATA_DIR": str(data)}
    for command in DJANGO_SETUP:
        assert documented(command), f"not in the README: {command}"
        subprocess.run(script(command), cwd=ROOT, env={**os.environ, **env}, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    return env


class Example:
    """A README command run from the repository root, listening on a free port."""

    def __init__(self, command: str, log: Path, **env: str) -> None:
        assert documented(command), f"not in the README: {command}"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        argv = script(command)
        env.update(WSGIPOOL_BIND=f"127.0.0.1:{port}", UVICORN_PORT=str(port))
        env = {**os.environ, **env}
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=out)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30)

    def ready(self, path: str = "/") -> Example:
        def up() -> bool:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                return self.get(path).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, what=" ".join(self.proc.args))  # type: ignore[arg-type]
        return self

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return self.log.read_text()


@pytest.fixture
def example(tmp_path: Path) -> Iterator[Callable[[str], Example]]:
    started: list[Example] = []

    def start(command: str, **env: str) -> Example:
        started.append(Example(command, tmp_path / f"example-{len(started)}.log", **env))
        return started[-1]

    yield start
    for one in started:
        one.stop()


def test_flask_example(example: Callable[[str], Example]) -> None:
    served = example(FLASK).ready("/-/readyz")
    pids = {served.get("/").json()["worker_pid"] for _ in range(4)}
    assert served.proc.pid not in pids
    assert served.get("/").json()["hello"] == "from Flask"
    assert httpx.post(served.url + "/echo", content=b"hi").json() == {"received": "hi"}
    assert served.get("/-/readyz").json() == {"status": "ok"}  # details: admin listener only
    served.stop()
    assert served.proc.returncode == 0


def test_django_example(example: Callable[..., Example], tmp_path: Path) -> None:
    served = example(DJANGO, **django_setup(tmp_path)).ready("/-/readyz")
    data = served.get("/").json()
    assert data["hello"] == "from Django"
    assert data["worker_pid"] != served.proc.pid
    assert served.get("/items/7/").json() == {"item": 7, "path": "/items/7/"}
    login = served.get("/admin/login/")
    assert login.status_code == 200
    assert "csrfmiddlewaretoken" in login.text
    # The admin's stylesheet, by the hashed name the page links to, from WhiteNoise.
    css = re.search(r'href="(/static/admin/css/base\.[0-9a-f]+\.css)"', login.text)
    assert css is not None, login.text
    style = served.get(css[1])
    assert style.status_code == 200
    assert style.headers["content-type"].startswith("text/css")
    assert "max-age=315360000" in style.headers["cache-control"]
    assert served.get("/static/admin/css/base.css").status_code == 200
    served.stop()
    assert served.proc.returncode == 0


def test_mixed_router_example(example: Callable[[str], Example]) -> None:
    served = example(MIXED).ready()
    native = served.get("/elsewhere").json()
    assert native == {"app": "asgi", "pid": served.proc.pid, "path": "/elsewhere"}
    shop = served.get("/shop/cart").json()
    assert (shop["app"], shop["script_name"], shop["path_info"]) == ("shop", "/shop", "/cart")
    blog = served.get("/blog/").json()
    assert (blog["app"], blog["script_name"], blog["path_info"]) == ("blog", "/blog", "/")
    assert len({served.proc.pid, shop["worker_pid"], blog["worker_pid"]}) == 3
    assert "Application shutdown complete." in served.stop()
