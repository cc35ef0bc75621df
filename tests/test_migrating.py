"""docs/migrating.md's gunicorn.conf.py, as it is and converted: checked, then served."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from support import Front
from wsgipool._cli.main import main

ROOT = Path(__file__).parent.parent
DJANGO = ROOT / "examples" / "django"
CONVERTED = DJANGO / "wsgipool.conf.py"


def blocks() -> dict[str, str]:
    """The doc's Python blocks, by their first line."""
    text = (ROOT / "docs" / "migrating.md").read_text()
    found = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    return {block.splitlines()[0]: block for block in found}


def settings(out: str) -> dict[str, str]:
    return {line.partition(" = ")[0]: line.partition(" = ")[2] for line in out.splitlines()}


def test_the_converted_file_in_the_doc_is_the_example() -> None:
    first_line = CONVERTED.read_text().splitlines()[0]
    assert blocks()[first_line] == CONVERTED.read_text()


def test_both_files_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = "mysite.wsgi:application"
    assert main(["serve", "-c", str(CONVERTED), app, "--check-config"]) == 0
    out, err = capsys.readouterr()
    assert err == ""  # nothing to warn about
    found = settings(out)
    source = f"  # {CONVERTED}"
    expected = {
        "bind": "0.0.0.0:8000", "workers": "3", "timeout": "60", "max_requests": "1000",
        "max_requests_jitter": "100", "preload": "on", "proxy_headers": "on",
        "forwarded_allow_ips": "10.0.0.5", "hooks": str(CONVERTED),
    }  # fmt: skip
    for name, value in expected.items():
        assert found[name] == value + source, name

    gunicorn = tmp_path / "gunicorn.conf.py"
    gunicorn.write_text(blocks()["# gunicorn.conf.py"])
    assert main(["serve", "-c", str(gunicorn), app, "--check-config"]) == 0
    out, err = capsys.readouterr()
    assert settings(out)["preload"] == f"on  # {gunicorn}"
    assert "gunicorn's preload_app is read as preload" in err
    assert "gunicorn's accesslog is ignored; use access_log" in err
    assert "gunicorn's post_fork is ignored; use the post_worker_init(worker) hook" in err


def test_the_converted_file_serves_django(tmp_path: Path) -> None:
    front = Front(tmp_path, "-c", str(CONVERTED), "--chdir", str(DJANGO), "--status",
                  "mysite.wsgi:application", DJANGO_DATA_DIR=str(tmp_path))  # fmt: skip
    try:
        front.ready()
        answer = front.get("/").json()
        assert answer["hello"] == "from Django"
        readiness = front.admin("/-/readyz").json()  # the details are on the admin listener
        assert readiness["idle"] + readiness["busy"] == 3  # workers = 3, from the file
        assert front.stop() == 0
    finally:
        front.stop(signal.SIGKILL)
    output = front.output()
    assert "with 3 workers" in output
    assert "preload template started" in output
    assert "Traceback" not in output
