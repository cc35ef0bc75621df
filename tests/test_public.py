"""The public surface and its documentation."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import wsgipool

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_exported_members() -> None:
    exported = {name for name in dir(wsgipool) if not name.startswith("_")}
    assert set(wsgipool.__all__) - {"__version__"} == exported - {"demo"}
    for name in wsgipool.__all__:
        member = getattr(wsgipool, name)
        if inspect.isclass(member):
            assert member.__module__ == "wsgipool", name  # re-exported under the package


def test_asgiref_signatures() -> None:
    adapter = inspect.signature(wsgipool.WsgiToAsgi)
    assert list(adapter.parameters)[:2] == ["wsgi_application", "duplicate_header_limit"]
    assert adapter.parameters["duplicate_header_limit"].default == 100
    instance = wsgipool.WsgiToAsgiInstance
    assert list(inspect.signature(instance.build_environ).parameters) == ["self", "scope", "body"]
    start = inspect.signature(instance.start_response).parameters
    assert list(start) == ["self", "status", "response_headers", "exc_info"]
    assert start["exc_info"].default is None


def test_every_option_is_in_readme() -> None:
    for field in dataclasses.fields(wsgipool.Config):
        assert f"`{field.name}`" in README, field.name


def test_packaging_metadata() -> None:
    root = Path(__file__).parent.parent
    pyproject = (root / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject  # from wsgipool.__version__ alone
    assert 'path = "src/wsgipool/__init__.py"' in pyproject
    for name in ("Homepage", "Source", "Issues", "Changelog"):
        assert f'{name} = "https://github.com/wsgipool/wsgipool' in pyproject
    license_text = (root / "LICENSE").read_text()
    assert license_text.startswith("MIT License")
    assert "wsgipool developers" in license_text
    changelog = (root / "CHANGELOG.md").read_text()
    assert "## Unreleased" in changelog
    assert f"## {wsgipool.__version__}" in changelog


def test_version_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "wsgipool", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out == f"wsgipool {wsgipool.__version__}\n"
