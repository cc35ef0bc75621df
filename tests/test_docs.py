"""The documentation: the README stays one page, docs/options.md is generated from
``Config``, the room table matches the tree, and every link between pages resolves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
GENERATOR = ROOT / "docs" / "make_options.py"
REGENERATE = "python docs/make_options.py"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
PAGES.append(ROOT / "deploy" / "README.md")

_LINK = re.compile(r"\]\(([^)\s]+)\)")
_OPTION = re.compile(r"`(\w+)`")


def generated_block() -> str:
    """What the generator makes of this checkout's ``Config``."""
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--stdout"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def option_rows(text: str, column: int) -> dict[str, str]:
    """Option name -> the cell in ``column`` of the table rows that start with an option."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        name = _OPTION.fullmatch(cells[0])
        if line.startswith("|") and name and len(cells) > column:
            rows[name[1]] = cells[column]
    return rows


def pool_defaults() -> dict[str, str]:
    """Option name -> its default cell, from the generated pool table."""
    return option_rows(generated_block().split("### Server options")[0], column=3)


def prose(path: Path) -> list[str]:
    """The lines of a Markdown page outside its fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``path``."""
    slugs = set()
    for line in prose(path):
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slugs.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return slugs


def test_options_md_matches_config() -> None:
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, (
        f"docs/options.md no longer matches wsgipool.Config: run `{REGENERATE}` and commit "
        f"docs/options.md.\n{done.stdout}{done.stderr}"
    )


def test_hand_written_options_exist() -> None:
    """The hand-written part of docs/options.md names only options that exist."""
    options = pool_defaults()
    text = (ROOT / "docs" / "options.md").read_text()
    hand_written = text.split("<!-- END GENERATED -->")[1]
    named = re.findall(r"\*\*`(\w+)`\*\*", hand_written)
    assert named
    assert set(named) <= set(options), set(named) - set(options)


def test_readme_options_table_matches_config() -> None:
    options = pool_defaults()
    rows = option_rows(README.read_text(), column=1)
    assert len(rows) >= 8
    for name, default in rows.items():
        assert name in options, f"README names an option Config lacks: {name}"
        assert default == options[name], (
            f"README gives {name} the default {default}, docs/options.md {options[name]}"
        )


def test_readme_is_one_page_with_its_two_commands() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    assert 'pip install ".[serve]" && wsgipool serve wsgipool.demo:app --workers 2' in text
    assert 'pip install -e ".[test]" && python -m pytest' in text
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.name != "README.md":
            assert f"(docs/{page.name})" in text, f"README does not link docs/{page.name}"


def test_room_table_matches_the_tree() -> None:
    """Each room of src/wsgipool has a row in docs/architecture.md naming its modules."""
    package = ROOT / "src" / "wsgipool"
    rows = {}
    for line in prose(ROOT / "docs" / "architecture.md"):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3:
            rows.setdefault(cells[1], "")
            rows[cells[1]] += cells[2]
    rooms = sorted(p.parent for p in package.glob("*/__init__.py"))
    for room in [package, *rooms]:
        folder = "top level" if room == package else f"`{room.name}/`"
        assert folder in rows, f"docs/architecture.md: no row for {folder}"
        for module in sorted(room.glob("*.py")):
            if room != package and module.name == "__init__.py":
                continue
            assert f"`{module.name}`" in rows[folder], (
                f"docs/architecture.md: the {folder} row does not name {module.name}"
            )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(page: Path) -> None:
    for line in prose(page):
        for target in _LINK.findall(line):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.name}: {target} does not exist"
            if anchor:
                assert anchor in anchors(linked), f"{page.name}: no heading for {target}"
