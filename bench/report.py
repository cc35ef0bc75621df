"""Markdown table and PNG chart of a benchmark run (``run.py`` calls these)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ME = "wsgipool"
ORDER = ("uvicorn-asgi", "asgiref", "a2wsgi", "gunicorn", "wsgipool")
LATENCY = "hello-1conn"  # the workload judged by p50 latency, not throughput
NOISY = 20.0  # percent of a core used by processes outside the benchmark
MEMORY_RESULT = Path(__file__).resolve().parent / "results" / "memory.json"


def _index(cells: Sequence[Any]) -> dict[tuple[str, str], Any]:
    return {(c.contender, c.workload): c for c in cells if not c.failed}


def _ratio(mine: Any, peer: Any, workload: str) -> str:
    if mine is None or peer is None:
        return ""
    if peer is mine:
        return "-"
    if workload == LATENCY:
        return f"{mine.p50_ms / peer.p50_ms:.2f} x" if peer.p50_ms else ""
    return f"{mine.rps / peer.rps:.2f} x" if peer.rps else ""


def results_table(cells: Sequence[Any]) -> list[str]:
    found = _index(cells)
    lines = [
        "| workload | contender | req/s | MB/s | p50 ms | p99 ms | errors "
        "| CPU % front + workers | wsgipool ratio |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    workloads = list(dict.fromkeys(c.workload for c in cells))
    for workload in workloads:
        mine = found.get((ME, workload))
        for name in ORDER:
            cell = next((c for c in cells if c.contender == name and c.workload == workload), None)
            if cell is None:
                continue
            if cell.failed:
                lines.append(f"| {workload} | {name} | failed: {cell.failed[:60]} |||||||")
                continue
            cpu = f"{cell.front_cpu:.0f} + {cell.workers_cpu:.0f}"
            noisy = " †" if cell.others_cpu > NOISY else ""
            lines.append(
                f"| {workload} | {name}{noisy} | {cell.rps:,.0f} | {cell.mbps:,.1f} "
                f"| {cell.p50_ms:.2f} | {cell.p99_ms:.2f} | {cell.errors} | {cpu} "
                f"| {_ratio(mine, cell, workload)} |"
            )
    return lines


def _targets(cells: Sequence[Any]) -> list[tuple[str, str, str, bool | None]]:
    """(target, measured, goal, met) for each target the issue sets."""
    found = _index(cells)

    def ratio(workload: str, peer: str, get: Callable[[Any], float]) -> float | None:
        mine, other = found.get((ME, workload)), found.get((peer, workload))
        if mine is None or other is None or not get(other):
            return None
        return get(mine) / get(other)

    def row(
        name: str, value: float | None, goal: str, fmt: str, ok: Callable[[float], bool]
    ) -> tuple[str, str, str, bool | None]:
        if value is None:
            return name, "n/a", goal, None
        return name, fmt.format(value), goal, ok(value)

    def rps(c: Any) -> float:
        return float(c.rps)

    def p50(c: Any) -> float:
        return float(c.p50_ms)

    stream, upload = found.get((ME, "stream")), found.get((ME, "upload"))
    rows = [
        row(
            "hello, 16 conns ÷ bare uvicorn ASGI",
            ratio("hello", "uvicorn-asgi", rps),
            "≥ 0.70 x",
            "{:.2f} x",
            lambda v: v >= 0.7,
        ),
        row(
            "hello, 1 conn p50 ÷ bare uvicorn ASGI",
            ratio(LATENCY, "uvicorn-asgi", p50),
            "≤ 2.00 x",
            "{:.2f} x",
            lambda v: v <= 2.0,
        ),
        row(
            "cpu ÷ gunicorn sync",
            ratio("cpu", "gunicorn", rps),
            "≥ 0.95 x",
            "{:.2f} x",
            lambda v: v >= 0.95,
        ),
        row("cpu ÷ a2wsgi", ratio("cpu", "a2wsgi", rps), "≥ 2.00 x", "{:.2f} x", lambda v: v >= 2),
        row(
            "stream 10 MiB",
            stream.mbps / 1000 if stream else None,
            "≥ 1.5 GB/s",
            "{:.2f} GB/s",
            lambda v: v >= 1.5,
        ),
        row(
            "upload 10 MiB",
            upload.mbps / 1000 if upload else None,
            "≥ 1.0 GB/s",
            "{:.2f} GB/s",
            lambda v: v >= 1.0,
        ),
    ]
    memory = _memory()
    if memory is not None:
        growth = max(memory["upload_growth_mib"], memory["download_growth_mib"])
        rows.append(
            row(
                "front RSS growth, 1 GiB up + down (bench/memory.py)",
                growth,
                "< 50 MiB",
                "{:.1f} MiB",
                lambda v: v < 50,
            )
        )
    return rows


def _memory() -> dict[str, Any] | None:
    try:
        return dict(json.loads(MEMORY_RESULT.read_text()))
    except (OSError, ValueError):
        return None


def _noise_note(cells: Sequence[Any]) -> str:
    measured = [c for c in cells if not c.failed]
    worst = max((c.others_cpu for c in measured), default=0.0)
    noisy = sum(c.others_cpu > NOISY for c in measured)
    text = f"Other processes on the machine used at most {worst:.0f} % of a core during a cell"
    if noisy:
        text += (
            f"; † marks the {noisy} cell(s) where they used more than {NOISY:.0f} %, "
            "whose figures are likely low"
        )
    return text + "."


def memory_table(cells: Sequence[Any]) -> list[str]:
    lines = ["| contender | front peak RSS MiB | largest worker peak RSS MiB |", "|---|--:|--:|"]
    for name in ORDER:
        mine = [c for c in cells if c.contender == name and not c.failed]
        if mine:
            front = max(c.front_hwm_mib for c in mine)
            worker = max(c.worker_hwm_mib for c in mine)
            lines.append(
                f"| {name} | {front:.1f} | {worker:.1f} |"
                if worker
                else f"| {name} | {front:.1f} | - |"
            )
    return lines


def markdown(cells: Sequence[Any], meta: dict[str, Any]) -> tuple[str, bool]:
    """The report, and whether a target was missed."""
    targets = _targets(cells)
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    out = [
        "# wsgipool benchmark",
        "",
        f"{meta['date']} · {meta['cpu']} · {meta['cores']} cores · Python {meta['python']} · "
        f"{meta['wrk']} · {meta['duration']:g} s per cell after {meta['warmup']:g} s warm-up"
        + (f" · best of {meta['repeat']} runs" if meta.get("repeat", 1) > 1 else "")
        + (" · **smoke run**" if meta["smoke"] else ""),
        "",
        f"Versions: {versions}.",
        "",
        "## Targets",
        "",
        "| target | measured | goal | met |",
        "|---|--:|--:|:-:|",
    ]
    for name, value, goal, met in targets:
        mark = "-" if met is None else ("yes" if met else "**no**")
        out.append(f"| {name} | {value} | {goal} | {mark} |")
    out += [
        "",
        "## Results",
        "",
        *results_table(cells),
        "",
        "req/s counts 2xx responses only; *errors* are wrong statuses, timeouts and "
        "socket errors. *wsgipool ratio*: wsgipool's req/s ÷ the row's req/s "
        "(higher is better); for "
        f"`{LATENCY}` wsgipool's p50 ÷ the row's p50 (lower is better). MB/s counts the "
        "10 MiB bodies for `stream` and `upload` and the bytes wrk read otherwise. "
        "CPU: percent of one core used by the server's first process and by its "
        "children during the measurement.",
        "",
        _noise_note(cells),
        "",
        "## Peak memory (VmHWM after the last cell)",
        "",
        *memory_table(cells),
        "",
    ]
    memory = _memory()
    if memory is not None:
        out += [
            f"`bench/memory.py` ({memory['date']}): front RSS grew "
            f"{memory['upload_growth_mib']:.1f} MiB through a "
            f"{memory['size_mib'] // 1024} GiB upload and {memory['download_growth_mib']:.1f} "
            f"MiB through a {memory['size_mib'] // 1024} GiB download to a client reading "
            f"{memory['client_mib_s']:g} MiB/s.",
            "",
        ]
    out += ["## Contenders", ""]
    out += [f"- **{name}**: {note}" for name, note in meta["contenders"].items()]
    out += [
        "",
        "Every server runs alone on 127.0.0.1 with the same uvicorn settings (uvloop, "
        "httptools, no access log, log level warning); wrk uses one thread.",
        "",
    ]
    return "\n".join(out), any(met is False for *_, met in targets)


def chart(cells: Sequence[Any], meta: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    found = _index(cells)
    panels = [
        ("hello", "hello, 16 conns: req/s", lambda c: c.rps),
        (LATENCY, "hello, 1 conn: p50 ms (lower is better)", lambda c: c.p50_ms),
        ("cpu", "cpu (3 ms), 16 conns: req/s", lambda c: c.rps),
        ("stream", "stream 10 MiB: MB/s", lambda c: c.mbps),
        ("upload", "upload 10 MiB: MB/s", lambda c: c.mbps),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    for ax, (workload, title, get) in zip(axes.flat, panels, strict=False):
        names = [n for n in ORDER if (n, workload) in found]
        values = [get(found[(n, workload)]) for n in names]
        _bars(ax, names, values, title)
    names = [n for n in ORDER if any(c.contender == n for c in found.values())]
    front = [max(c.front_hwm_mib for c in found.values() if c.contender == n) for n in names]
    worker = [max(c.worker_hwm_mib for c in found.values() if c.contender == n) for n in names]
    ax = axes.flat[5]
    ys = range(len(names))
    ax.barh([y + 0.2 for y in ys], front, 0.4, label="front", color="#4c72b0")
    ax.barh([y - 0.2 for y in ys], worker, 0.4, label="largest worker", color="#dd8452")
    ax.set_yticks(list(ys), names)
    ax.set_title("peak RSS, MiB")
    ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(
        f"wsgipool vs peers, {meta['workers']} workers, {meta['cores']} cores "
        f"({meta['date']}{', smoke' if meta['smoke'] else ''})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _bars(ax: Any, names: list[str], values: list[float], title: str) -> None:
    colors = ["#c44e52" if n == ME else "#8c8c8c" for n in names]
    bars = ax.barh(names, values, color=colors)
    top = max(values, default=1) or 1
    for bar, value in zip(bars, values, strict=True):
        text = f"{value:,.2f}" if value < 10 else f"{value:,.0f}"
        ax.text(
            bar.get_width() + top * 0.01,
            bar.get_y() + bar.get_height() / 2,
            text,
            va="center",
            fontsize=8,
        )
    ax.set_xlim(0, top * 1.18)
    ax.set_title(title, fontsize=10)
