"""``wsgipool serve -c FILE``: a Python config file under the variables and the flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsgipool._cli.main import Serving, main
from wsgipool._cli.parser import parse
from wsgipool._cpus import usable_cpus


def settings(out: str) -> dict[str, tuple[str, str]]:
    """``--check-config``'s lines as ``{name: (value, source)}``."""
    found = {}
    for line in out.splitlines():
        name, _, rest = line.partition(" = ")
        value, _, source = rest.partition("  # ")
        found[name] = (value, source)
    return found


def main_output(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


def test_precedence_flags_then_variables_then_file_then_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "wsgipool.conf.py"
    conf.write_text("import os\nworkers = 3\ntimeout = 60\nmax_requests = 10\nbind = [':9000']\n")
    monkeypatch.setenv("WSGIPOOL_TIMEOUT", "45")
    code = main(["serve", "-c", str(conf), "apps:hello", "--max-requests", "7", "--check-config"])
    assert code == 0
    found = settings(capsys.readouterr().out)
    assert found["workers"] == ("3", str(conf))
    assert found["timeout"] == ("45", "WSGIPOOL_TIMEOUT")
    assert found["max_requests"] == ("7", "--max-requests")
    assert found["bind"] == (":9000", str(conf))
    assert found["graceful_timeout"] == ("30", "default")
    assert found["hooks"] == ("none", "default")  # the file defines no hook
    assert "os" not in found
    count, why = usable_cpus()
    defaults = settings(main_output(capsys, ["serve", "apps:hello", "--check-config"]))
    assert defaults["workers"] == (str(count), f"default, from {why}")

    monkeypatch.setenv("WSGIPOOL_CONFIG", str(conf))  # the file named by the environment
    assert main(["serve", "apps:hello", "--check-config"]) == 0
    assert settings(capsys.readouterr().out)["workers"] == ("3", str(conf))


def test_gunicorn_names_warn_and_carry_over_where_they_can(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(
        "preload_app = True\nloglevel = 'warning'\naccesslog = '-'\nthreads = 4\n"
        "worker_class = 'gthread'\nsome_setting_of_ours = 1\n"
    )
    assert main(["serve", "-c", str(conf), "apps:hello", "--check-config"]) == 0
    out, err = capsys.readouterr()
    found = settings(out)
    assert found["preload"] == ("on", str(conf))
    assert found["log_level"] == ("warning", str(conf))
    assert f"{conf}: gunicorn's preload_app is read as preload; rename it" in err
    assert f"{conf}: gunicorn's accesslog is ignored; use access_log" in err
    assert f"{conf}: gunicorn's threads is ignored; use workers, or max_workers" in err
    assert f"{conf}: gunicorn's worker_class is ignored" in err
    assert f"{conf}: some_setting_of_ours is not a wsgipool setting; ignored" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("workers = 'three'", "workers must be a whole number, got 'three'"),
        ("workers = 0", "workers must be at least 1, got 0"),
        ("preload = 'maybe'", "preload must be true or false, got 'maybe'"),
        ("workers = 3\nmax_workers = 2", "max_workers must be at least workers (3), got 2"),
        ("import nowhere_to_be_found", "ModuleNotFoundError: No module named"),
    ],
)
def test_a_bad_value_names_the_file_the_setting_and_what_it_must_be(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    conf = tmp_path / "bad.py"
    conf.write_text(text + "\n")
    assert main(["serve", "-c", str(conf), "apps:hello", "--check-config"]) == 2
    assert f"wsgipool: error: {conf}: {message}" in capsys.readouterr().err


def test_a_missing_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--config", str(tmp_path / "nope.py"), "apps:hello"]) == 2
    assert "--config: no such file" in capsys.readouterr().err


def test_the_start_up_line_says_where_the_worker_count_came_from() -> None:
    count, why = usable_cpus()
    serving = Serving(parse(["serve", "apps:hello", "-b", "127.0.0.1:0"]))
    try:
        assert f" with {count} workers (from {why}) (wsgipool" in serving.banner()
    finally:
        serving.close()
    serving = Serving(parse(["serve", "apps:hello", "-b", "127.0.0.1:0", "-w", "1"]))
    try:
        assert " with 1 workers (wsgipool" in serving.banner()  # chosen, not derived
    finally:
        serving.close()


def test_a_hook_of_gunicorn_s_shape_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "hooks.py"
    conf.write_text(
        "def post_request(worker, req, environ, resp): pass\n"
        "def worker_exit(server, worker): pass\n"
        "def pre_request(worker, req): pass\n"
    )
    assert main(["serve", "-c", str(conf), "apps:hello", "--check-config"]) == 0
    out, err = capsys.readouterr()
    assert settings(out)["hooks"] == (str(conf), str(conf))
    assert "the post_request hook is called as post_request(worker, environ, status)" in err
    assert "the worker_exit hook is called as worker_exit(worker)" in err
    assert "pre_request" not in err  # the same shape as gunicorn's
