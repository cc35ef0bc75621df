"""Report sections from the separate scripts' results: memory, worker replacement, slow clients.

``memory.py``, ``replace.py`` and ``slow.py`` each write a JSON file under ``bench/results``;
``run.py``'s report includes what it finds there (with its date, so an old file is visible as
old), and each script prints its own section the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
MEMORY, REPLACE, SLOW = (RESULTS / f"{name}.json" for name in ("memory", "replace", "slow"))
ME = "wsgipool"
SLOW_GOAL_MS = 100.0
REPLACE_GOAL_MS = {"spawn": 300.0, "preload": 30.0}
SHORT = {"upload": "slow uploaders", "read": "slow readers", "idle": "idle keep-alive"}
ATTACKS = {
    "upload": "slow uploaders (Content-Length 100000, 1 byte / 0.5 s)",
    "read": "slow readers of a 64 MiB response (small SO_RCVBUF, read nothing)",
    "idle": "idle keep-alive connections (one request, then silent)",
    "slowloris": "slowloris (headers trickled, never finished)",
    "mixed": "the four kinds at once, K/4 connections of each",
}

MODES = {  # how each server starts the successor, by replace.py's mode
    ("wsgipool", "spawn"): "spawn (a new interpreter imports the app)",
    ("wsgipool", "preload"): "`--preload`: fork of a template that imported it",
    ("gunicorn", "spawn"): "fork of the arbiter, then import the app",
    ("gunicorn", "preload"): "`--preload`: fork of the arbiter that imported it",
}

Target = tuple[str, str, str, bool | None]


def load(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def _row(
    name: str, value: float | None, goal: str, fmt: str, ok: Callable[[float], bool]
) -> Target:
    if value is None:
        return name, "n/a", goal, None
    return name, fmt.format(value), goal, ok(value)


def _smoke(data: dict[str, Any]) -> str:
    return ", **smoke run**: not figures" if data.get("smoke") else ""


# -- medians with failures ---------------------------------------------------------------


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2 if ordered else math.inf


def stored(value: float | None) -> float:
    """JSON has no infinity: a probe that never got its answer is stored as null."""
    return math.inf if value is None else value


def millis(value: float | None, timeout_s: float) -> str:
    value = stored(value)
    if math.isinf(value):
        return f"> {timeout_s:g} s"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.1f} ms"


# -- memory.py ---------------------------------------------------------------------------


def memory_targets() -> list[Target]:
    data = load(MEMORY)
    if data is None:
        return []
    growth = max(data["upload_growth_mib"], data["download_growth_mib"])
    name = "front RSS growth, 1 GiB up + down (bench/memory.py)"
    return [_row(name, growth, "< 50 MiB", "{:.1f} MiB", lambda v: v < 50)]


def memory_lines() -> list[str]:
    data = load(MEMORY)
    if data is None:
        return []
    gib = data["size_mib"] // 1024
    return [
        f"`bench/memory.py` ({data['date']}): front RSS grew "
        f"{data['upload_growth_mib']:.1f} MiB through a {gib} GiB upload and "
        f"{data['download_growth_mib']:.1f} MiB through a {gib} GiB download to a client "
        f"reading {data['client_mib_s']:g} MiB/s.",
        "",
    ]


# -- replace.py --------------------------------------------------------------------------


def replace_targets() -> list[Target]:
    data = load(REPLACE)
    if data is None:
        return []
    rows: list[Target] = []
    for mode, goal in REPLACE_GOAL_MS.items():
        cell = _find(data, server=ME, mode=mode)
        name = f"worker replaced, {mode}: kill to the successor's answer, median"
        if cell is None or cell["failed"]:
            rows.append((name, "n/a", f"≤ {goal:g} ms", None))
            continue
        measured = f"{cell['median_ms']:.1f} ms (max {cell['max_ms']:.1f})"
        rows.append((name, measured, f"≤ {goal:g} ms", cell["median_ms"] <= goal))
    return rows


def replace_lines(data: dict[str, Any] | None = None) -> list[str]:
    data = data or load(REPLACE)
    if data is None:
        return []
    lines = [
        f"`bench/replace.py` ({data['date']}{_smoke(data)}): {data['rounds']} times per row, "
        f"a worker of a {data['workers']}-worker server serving `{data['app']}` is SIGKILLed "
        "while idle; the time runs from the kill until a request is answered by a new pid.",
        "",
        "| server | workers start by | median | max | ÷ gunicorn, same mode (median) |",
        "|---|---|--:|--:|--:|",
    ]
    for cell in data["cells"]:
        mode = MODES[cell["server"], cell["mode"]]
        if cell["failed"]:
            lines.append(f"| {cell['server']} | {mode} | failed: {cell['failed'][:80]} |||")
            continue
        peer = _find(data, server="gunicorn", mode=cell["mode"])
        ratio = "-"
        if cell["server"] != "gunicorn" and peer and not peer["failed"] and peer["median_ms"]:
            ratio = f"{cell['median_ms'] / peer['median_ms']:.2f} x"
        lines.append(
            f"| {cell['server']} | {mode} | {cell['median_ms']:.1f} ms "
            f"| {cell['max_ms']:.1f} ms | {ratio} |"
        )
    return [*lines, ""]


def _find(data: dict[str, Any], **match: Any) -> dict[str, Any] | None:
    for cell in data["cells"]:
        if all(cell.get(k) == v for k, v in match.items()):
            return dict(cell)
    return None


# -- slow.py -----------------------------------------------------------------------------


def slow_targets() -> list[Target]:
    data = load(SLOW)
    if data is None:
        return []
    rows = []
    for attack in ATTACKS:
        cells = [c for c in data["cells"] if c["server"] == ME and c["attack"] == attack]
        worst = max((stored(c["median_ms"]) for c in cells), default=None)
        ks = "/".join(str(c["k"]) for c in cells) or "-"
        rows.append(
            (
                f"GET /hello under {SHORT.get(attack, attack)}, K = {ks}: worst median",
                "n/a" if worst is None else millis(worst, data["timeout_s"]),
                f"< {SLOW_GOAL_MS:g} ms",
                None if worst is None else worst < SLOW_GOAL_MS,
            )
        )
    return rows


def slow_cell(cell: dict[str, Any], timeout_s: float) -> str:
    if cell.get("failed"):
        return f"failed: {cell['failed'][:40]}"
    text = f"{millis(cell['median_ms'], timeout_s)} / {millis(cell['max_ms'], timeout_s)}"
    probes = cell["probes"]
    answered = sum(isinstance(p, (int, float)) for p in probes)
    if answered < len(probes):
        reasons = sorted({str(p) for p in probes if not isinstance(p, (int, float))})
        text += f" ({answered}/{len(probes)} answered: {', '.join(reasons)})"
    if cell.get("closed"):
        text += f" · {cell['closed']} of {cell['k']} attackers cut"
    if "front_growth_mib" in cell:
        front, tree = cell["front_growth_mib"], cell["tree_growth_mib"]
        text += f" · RSS +{front:.0f} MiB front, +{tree:.0f} all"
    if cell.get("disk_peak_mib"):
        text += f" · spool peak {cell['disk_peak_mib']:.0f} MiB"
    if cell.get("note"):
        text += f" · {cell['note'][:60]}"
    return text


def slow_lines(data: dict[str, Any] | None = None) -> list[str]:
    data = data or load(SLOW)
    if data is None:
        return []
    servers = list(data["servers"])
    lines = [
        f"`bench/slow.py` ({data['date']}{_smoke(data)}): time to answer `GET /hello` on a "
        f"fresh connection while K attackers of one kind hold connections; {data['probes']} "
        f"probes per cell, {data['timeout_s']:g} s timeout each (a cell stops probing after two "
        "timeouts in a row), median / max. *cut*: attack connections the server closed or "
        "answered during the cell. *RSS*: growth of the server's first process (*front*) "
        "and of all its processes, peak over the cell less the start. *spool peak*: the "
        "most bytes in unlinked files the first process held open (wsgipool's spool). "
        "Goal for wsgipool: under 100 ms in every cell.",
        "",
        "| attack | K | " + " | ".join(servers) + " |",
        "|---|--:|" + "--:|" * len(servers),
    ]
    for attack in ATTACKS:
        for k in data["ks"]:
            row = [attack, str(k)]
            for server in servers:
                cell = _find(data, server=server, attack=attack, k=k)
                row.append("-" if cell is None else slow_cell(cell, data["timeout_s"]))
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", *(f"- **{a}**: {text}" for a, text in ATTACKS.items())]
    lines += [*(f"- **{name}**: {note}" for name, note in data["servers"].items()), ""]
    return lines
