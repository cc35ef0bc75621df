"""The access line in gunicorn's atoms, rendered against one fixed request; request ids;
the errors of ``--log-config``; which admin addresses other hosts may reach."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wsgipool._cli.logconfig import apply_log_config
from wsgipool._errors import ConfigError
from wsgipool._front.request_id import RequestIds
from wsgipool._serve.access import DEFAULT_FORMAT, AccessFormat, Entry
from wsgipool._serve.admin import private_address

STARTED = 1_700_000_000.25


def fixed_entry() -> Entry:
    user = base64.b64encode(b"alice:secret")
    scope = {
        "type": "http", "method": "POST", "path": "/api/items", "query_string": b"page=2&q=x",
        "http_version": "1.1", "client": ("192.0.2.7", 51000), "root_path": "",
        "headers": [
            (b"host", b"example.org"), (b"user-agent", b"curl/8.0"),
            (b"referer", b"https://example.org/"), (b"authorization", b"Basic " + user),
            (b"x-request-id", b"req-1"),
        ],
    }  # fmt: skip
    entry = Entry(scope, STARTED)
    entry.status = 201
    entry.headers = [(b"content-type", b"application/json"), (b"x-request-id", b"req-1")]
    entry.bytes = 1234
    entry.seconds = 1.5000025
    return entry


@pytest.mark.parametrize(
    ("atom", "shown"),
    [
        ("h", "192.0.2.7"),
        ("l", "-"),
        ("u", "alice"),
        ("r", "POST /api/items?page=2&q=x HTTP/1.1"),
        ("s", "201"),
        ("m", "POST"),
        ("U", "/api/items"),
        ("q", "page=2&q=x"),
        ("H", "HTTP/1.1"),
        ("b", "1234"),
        ("B", "1234"),
        ("f", "https://example.org/"),
        ("a", "curl/8.0"),
        ("T", "1"),
        ("D", "1500002"),
        ("M", "1500"),
        ("L", "1.500002"),
        ("p", f"<{os.getpid()}>"),
        ("{User-Agent}i", "curl/8.0"),
        ("{x-request-id}o", "req-1"),
        ("{content-type}o", "application/json"),
        ("{x-missing}i", "-"),
        ("{REQUEST_METHOD}e", "POST"),
        ("{HTTP_HOST}e", "example.org"),
        ("nosuchatom", "-"),
    ],
)
def test_each_atom_of_a_fixed_request(atom: str, shown: str) -> None:
    assert AccessFormat(f"%({atom})s").render(fixed_entry()) == shown


def test_gunicorns_default_line_and_an_empty_body() -> None:
    entry = fixed_entry()
    when = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(STARTED))
    assert AccessFormat(DEFAULT_FORMAT).render(entry) == (
        f'192.0.2.7 - alice {when} "POST /api/items?page=2&q=x HTTP/1.1" 201 1234 '
        '"https://example.org/" "curl/8.0"'
    )
    entry.bytes = 0
    assert AccessFormat("%(b)s %(B)s").render(entry) == "- 0"  # as gunicorn: b is '-' for no body


def test_a_format_that_cannot_render_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="--access-log-format"):
        AccessFormat("%(h)d")
    assert AccessFormat("%(h)s %%(s)s 100%%").render(fixed_entry()) == "192.0.2.7 %(s)s 100%"


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ([(b"x-request-id", b"abc-123")], True),
        ([(b"X-Request-ID", b"a.b:c/d+e=f@g_h")], True),
        ([(b"x-request-id", b"has space")], False),
        ([(b"x-request-id", b"x" * 129)], False),
        ([(b"x-request-id", b"one"), (b"x-request-id", b"two")], False),
        ([], False),
    ],
)
def test_a_clients_request_id_is_kept_only_when_safe(
    given: list[tuple[bytes, bytes]], kept: bool
) -> None:
    scope = {"type": "http", "headers": [(b"host", b"h"), *given]}
    rid, seen = RequestIds("X-Request-ID").assign(scope)
    ids = [value for name, value in seen["headers"] if name.lower() == b"x-request-id"]
    assert ids == [rid.encode()]  # the app sees exactly the id in use
    assert (rid.encode() in [value for _, value in given]) is kept


def test_log_config_errors_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        apply_log_config(str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text('{"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}')
    with pytest.raises(ConfigError, match=r"broken\.json"):
        apply_log_config(str(broken))
    ini = tmp_path / "logging.ini"
    ini.write_text("[loggers]\nkeys=root\n")
    with pytest.raises(ConfigError, match=r"logging\.ini"):
        apply_log_config(str(ini))
    yaml_file = tmp_path / "logging.yaml"
    yaml_file.write_text("version: 1\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    with pytest.raises(ConfigError, match="needs PyYAML"):
        apply_log_config(str(yaml_file))


@pytest.mark.parametrize(
    ("address", "private"),
    [
        ("127.0.0.1:9000", True),
        ("[::1]:9000", True),
        ("localhost:9000", True),
        ("unix:/run/admin.sock", True),
        ("0.0.0.0:9000", False),
        (":9000", False),
        ("10.1.2.3:9000", False),
    ],
)
def test_an_admin_address_reachable_from_elsewhere_is_told_apart(
    address: str, private: bool
) -> None:
    assert private_address(address) is private


FORKED_IDS = """
import os
from wsgipool._front.request_id import new_id
new_id()  # the parent has served before it forks
read, write = os.pipe()
if os.fork() == 0:
    os.write(write, " ".join(new_id() for _ in range(1000)).encode())
    os._exit(0)
os.close(write)
os.wait()
print(" ".join(new_id() for _ in range(1000)))  # both go on after the fork
print(os.fdopen(read).read())
"""


def test_new_ids_are_unique_in_a_process_and_across_a_fork() -> None:
    """A server that imports the adapter and then forks its workers must not have them
    hand out the same ids (in a fresh interpreter: forking pytest's threads is unsafe)."""
    run = subprocess.run([sys.executable, "-c", FORKED_IDS], capture_output=True, text=True,
                         timeout=30, check=True)  # fmt: skip
    parent, child = (set(line.split()) for line in run.stdout.splitlines())
    assert len(parent) == 1000
    assert len(child) == 1000
    assert all(len(rid) == 32 for rid in parent | child)
    assert not parent & child


def test_a_decoded_path_cannot_start_a_log_line_of_its_own() -> None:
    """uvicorn gives ``path`` percent-decoded: ``%0D%0A`` in the URL is a real CR LF."""
    entry = fixed_entry()
    entry.scope["path"] = '/x\r\n127.0.0.1 "/admin" 200'
    line = AccessFormat('%(h)s "%(U)s" %(s)s').render(entry)
    assert "\n" not in line
    assert "\r" not in line
    assert line == '192.0.2.7 "/x\\x0d\\x0a127.0.0.1 "/admin" 200" 201'
