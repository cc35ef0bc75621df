"""Where log lines go: wsgipool as a library under servers that configure only their own
loggers, under ``wsgipool serve``, and in workers whose framework configures logging."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from support import ServerProcess, free_port, host_command, python_env

TESTS = Path(__file__).parent
#: A line in wsgipool's format: timestamp, pid, level, the request's id inside one, logger.
LINE = r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\] \[\d+\] \[%s\] (?:\[[^\]]+\] )?%s: %s"

Start = Callable[..., ServerProcess]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    started: list[ServerProcess] = []

    def run(argv: list[str], port: int, cwd: Path = TESTS, **env: str) -> ServerProcess:
        log = tmp_path / f"server-{len(started)}.log"
        started.append(ServerProcess(argv, log, port, cwd, {**python_env(tmp_path, TESTS), **env}))
        return started[-1]

    yield run
    for server in started:
        server.stop()


def hosted_module(tmp_path: Path, app: str, **options: object) -> str:
    keywords = "".join(f", {name}={value!r}" for name, value in options.items())
    (tmp_path / "hosted.py").write_text(
        f"from wsgipool import WsgiToAsgi\napp = WsgiToAsgi({app!r}, workers=1{keywords})\n"
    )
    return "hosted:app"


def found(pattern: str, text: str) -> list[str]:
    return re.findall(pattern, text, re.MULTILINE)


@pytest.mark.parametrize("host", ["uvicorn", "hypercorn", "granian"])
def test_library_lines_have_timestamps_and_info_under_any_host(
    start: Start, tmp_path: Path, host: str
) -> None:
    port = free_port()
    module = hosted_module(tmp_path, "apps:errors_log", health=True)
    server = start(host_command(host, module, port), port).ready()
    assert httpx.get(server.url + "/", timeout=30).text == "logged"
    text = server.output()
    assert len(found(LINE % ("INFO", "wsgipool.pool", r"worker 1 started \(pid \d+\)$"), text)) == 1
    assert len(found(LINE % ("ERROR", "wsgipool.app", "a line for the log"), text)) == 1


def test_the_hosts_logging_configuration_wins(start: Start, tmp_path: Path) -> None:
    """A host that configures the root logger gets wsgipool's lines in its format, once."""
    port = free_port()
    (tmp_path / "hosted.py").write_text(
        "import logging\n"
        "logging.basicConfig(level='INFO', format='HOST %(name)s %(message)s')\n"
        "from wsgipool import WsgiToAsgi\n"
        "app = WsgiToAsgi('apps:errors_log', workers=1, health=True)\n"
    )
    server = start(host_command("uvicorn", "hosted:app", port), port).ready()
    assert httpx.get(server.url + "/", timeout=30).text == "logged"
    text = server.output()
    assert len(found(r"^HOST wsgipool.pool worker 1 started", text)) == 1
    assert len(found(r"^HOST wsgipool.app a line for the log$", text)) == 1
    assert "] [INFO] wsgipool" not in text


def test_django_lines_appear_once_in_workers(start: Start, tmp_path: Path) -> None:
    port = free_port()
    argv = ["wsgipool", "serve", "djsite.wsgi:application", "-w", "1", "-b", f"127.0.0.1:{port}"]
    server = start(argv, port, DJANGO_SETTINGS_MODULE="djsite.settings_debug").ready()
    assert httpx.get(server.url + "/nope", timeout=30).status_code == 404
    assert httpx.get(server.url + "/log?text=from+the+view", timeout=30).status_code == 200
    text = server.output()
    # Django logs through its own handlers (DEBUG on: its console handler): once each.
    assert text.count("Not Found: /nope") == 1
    assert text.count("from the view") == 1
    # The worker's own lines still have wsgipool's format.
    assert len(found(LINE % ("INFO", "wsgipool.pool", r"worker 1 started"), text)) == 1


def test_app_without_logging_setup_gets_a_root_handler(start: Start, tmp_path: Path) -> None:
    port = free_port()
    argv = ["wsgipool", "serve", "apps:logs", "-w", "1", "-b", f"127.0.0.1:{port}"]
    server = start(argv, port).ready()
    response = httpx.get(server.url + "/", timeout=30)
    assert response.status_code == 200
    text = server.output()
    assert len(found(LINE % ("INFO", "myapp", "hello from the app$"), text)) == 1
    rid = response.headers["x-request-id"]  # made by the front: the client sent none
    assert f"[INFO] [{rid}] myapp: hello from the app" in text


@pytest.mark.parametrize(
    ("host", "logger", "shown"),
    [
        ("uvicorn", "uvicorn", "INFO:     worker 1 started"),
        ("granian", "_granian", "[INFO] worker 1 started"),
    ],
)
def test_readme_recipe_routes_lines_through_the_servers_handlers(
    start: Start, tmp_path: Path, host: str, logger: str, shown: str
) -> None:
    recipe = f'logging.getLogger("wsgipool").handlers = logging.getLogger("{logger}").handlers'
    assert recipe in (TESTS.parent / "README.md").read_text()
    (tmp_path / "hosted.py").write_text(
        f"import logging\n{recipe}\n"
        "from wsgipool import WsgiToAsgi\n"
        "app = WsgiToAsgi('apps:errors_log', workers=1, health=True)\n"
    )
    port = free_port()
    server = start(host_command(host, "hosted:app", port), port).ready()
    assert httpx.get(server.url + "/", timeout=30).text == "logged"
    text = server.output()
    assert text.count(shown) == 1
    assert text.count("a line for the log") == 1
    assert "wsgipool.pool" not in text  # not also through the fallback
