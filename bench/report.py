"""Markdown table and PNG chart of a benchmark run (``run.py`` calls these)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import sections

ME = "wsgipool"
ORDER = ("uvicorn-asgi", "asgiref", "a2wsgi", "gunicorn", "nginx-gunicorn", "wsgipool",
         "wsgipool-serve")  # fmt: skip
SERVED = "wsgipool-serve"  # the targets are its, when it ran: what a user runs
PROXIED = "nginx-gunicorn"  # what `wsgipool serve` replaces
LATENCY = "hello-1conn"  # the workload judged by p50 latency, not throughput
NOISY = 20.0  # percent of a core used by processes outside the benchmark
APPS = {"bench.app:app": "bench app"}  # other apps are named by their workload


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


def _targets(cells: Sequence[Any]) -> list[sections.Target]:
    """(target, measured, goal, met) for each target the issues set: of ``wsgipool serve``
    when it ran, else of the adapter under uvicorn."""
    found = _index(cells)
    me = SERVED if any(c.contender == SERVED for c in cells) else ME

    def ratio(workload: str, peer: str, get: Callable[[Any], float]) -> float | None:
        mine, other = found.get((me, workload)), found.get((peer, workload))
        if mine is None or other is None or not get(other):
            return None
        return get(mine) / get(other)

    def rps(c: Any) -> float:
        return float(c.rps)

    def p50(c: Any) -> float:
        return float(c.p50_ms)

    def peer(label: str, workload: str, name: str, goal: float) -> sections.Target:
        value = ratio(workload, name, rps)
        shown = "gunicorn sync" if name == "gunicorn" else "nginx + gunicorn"
        return _row(f"{label} ÷ {shown}", value, f"≥ {goal:.2f} x", lambda v: v >= goal)

    def front_us(label: str, workload: str, goal: float) -> sections.Target:
        mine = found.get((me, workload))
        return _row(
            f"front CPU per request, {label}",
            mine.front_us if mine else None,
            f"≤ {goal:.0f} µs",
            lambda v: v <= goal,
            "{:.0f} µs",
        )

    rows = [
        peer("hello, 16 conns", "hello", "gunicorn", 1.2),
        _row(
            "hello, 1 conn p50 ÷ gunicorn sync's",
            ratio(LATENCY, "gunicorn", p50),
            "≤ 1.00 x",
            lambda v: v <= 1.0,
        ),
        peer("cpu", "cpu", "gunicorn", 0.95),
        peer("stream 10 MiB", "stream", PROXIED, 1.0),
        peer("stream 10 MiB", "stream", "gunicorn", 0.8),
        peer("upload 10 MiB", "upload", "gunicorn", 1.5),
        peer("django", "django", PROXIED, 1.0),
        peer("django", "django", "gunicorn", 0.95),
        _row("django ÷ a2wsgi", ratio("django", "a2wsgi", rps), "> 1.00 x", _above(1)),
        peer("flask", "flask", "gunicorn", 0.9),
        _row("flask ÷ a2wsgi", ratio("flask", "a2wsgi", rps), "> 1.00 x", _above(1)),
        front_us("hello 16 conns", "hello", 40),
        front_us("django", "django", 100),
    ]
    return [
        *rows,
        *sections.memory_targets(),
        *sections.replace_targets(),
        *sections.slow_targets(),
    ]


def _above(limit: float) -> Callable[[float], bool]:
    return lambda v: v > limit


def _row(
    name: str, value: float | None, goal: str, ok: Callable[[float], bool], fmt: str = "{:.2f} x"
) -> sections.Target:
    if value is None:
        return name, "n/a", goal, None
    return name, fmt.format(value), goal, ok(value)


def front_table(cells: Sequence[Any], workers: int) -> list[str]:
    """Front CPU per request and what one core of front can serve, per workload."""
    found = _index(cells)
    names = [n for n in ORDER if any(c.contender == n for c in found.values())]
    head = [f"{n} ‡" if n == "gunicorn" else f"{n} §" if n == PROXIED else n for n in names]
    lines = [
        "| workload | " + " | ".join(head) + " | wsgipool workers fed |",
        "|---|" + "--:|" * (len(names) + 1),
    ]
    for workload in dict.fromkeys(c.workload for c in cells):
        row = [workload]
        for name in names:
            cell = found.get((name, workload))
            row.append(
                "" if cell is None or not cell.front_us
                else f"{cell.front_us:,.0f} µs · {1e6 / cell.front_us:,.0f}/s"
            )  # fmt: skip
        mine = found.get((ME, workload))
        fed = mine.workers_us / mine.front_us if mine and mine.front_us else None
        row.append("" if fed is None else f"{fed:.1f}")
        lines.append("| " + " | ".join(row) + " |")
    return [
        *lines,
        "",
        "Each cell: the front's CPU per request (CPU seconds of the server's first process ÷ "
        "requests answered, errors included) · its *capacity*, the requests/s that one full "
        "core of it would serve (10⁶ ÷ µs per request). For the in-process adapters and bare "
        "uvicorn the front is the whole server. ‡ gunicorn's arbiter serves no request: its "
        f"column is the whole CPU of its {workers} sync workers per request (accept, parse, app, "
        "write), for comparison. § nginx's master and workers (the front of that setup). "
        "*wsgipool workers fed*: how many workers one front core keeps "
        "busy on that workload (a worker's CPU per request ÷ the front's).",
    ]


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
    """Peak RSS per contender, one pair of columns per app served (each by its own server)."""
    apps = list(dict.fromkeys(c.app for c in cells if not c.failed))
    label = {a: APPS.get(a) or next(c.workload for c in cells if c.app == a) for a in apps}
    head = " | ".join(f"{label[a]}: front | {label[a]}: largest worker" for a in apps)
    lines = [f"| contender | {head} |", "|---|" + "--:|--:|" * len(apps)]
    for name in ORDER:
        row = [name]
        for app in apps:
            mine = [c for c in cells if c.contender == name and c.app == app and not c.failed]
            front = max((c.front_hwm_mib for c in mine), default=0.0)
            worker = max((c.worker_hwm_mib for c in mine), default=0.0)
            row += [f"{front:.1f}" if mine else "", f"{worker:.1f}" if worker else "-"]
        if any(row[1::2]):
            lines.append("| " + " | ".join(row) + " |")
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
        "Targets of the front-cost and slow-client issues: ratios to peers measured in the "
        "same run (2 workers each), so they hold on any machine; the rows below the "
        "throughput ratios come from `memory.py`, `replace.py` and `slow.py` when their "
        "results are present. They replace the earlier absolute goals (GB/s) and the ratios "
        "to bare uvicorn and to a2wsgi for `cpu` (2 workers can at most double one thread); "
        "the Results table still shows wsgipool's ratio to every contender.",
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
        "children during the measurement. `django` and `flask` serve the same page "
        "(a template over a 10-row SQLite query, `bench/djangosite`, `bench/flasksite.py`).",
        "",
        _noise_note(cells),
        "",
        "## Front CPU per request",
        "",
        *front_table(cells, meta["workers"]),
        "",
        "## Peak memory (VmHWM after the last cell), MiB",
        "",
        *memory_table(cells),
        "",
        *sections.memory_lines(),
    ]
    if replaced := sections.replace_lines():
        out += ["## Worker replacement", "", *replaced]
    if slow := sections.slow_lines():
        out += ["## Slow clients", "", *slow]
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
        ("django", "django page, 16 conns: req/s", lambda c: c.rps),
        ("flask", "flask page, 16 conns: req/s", lambda c: c.rps),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(18, 7.5))
    for ax, (workload, title, get) in zip(axes.flat, panels, strict=False):
        names = [n for n in ORDER if (n, workload) in found]
        values = [get(found[(n, workload)]) for n in names]
        _bars(ax, names, values, title)
    base = [c for c in found.values() if c.app in APPS]
    names = [n for n in ORDER if any(c.contender == n for c in base)]
    front = [max(c.front_hwm_mib for c in base if c.contender == n) for n in names]
    worker = [max(c.worker_hwm_mib for c in base if c.contender == n) for n in names]
    ax = axes.flat[7]
    ys = range(len(names))
    ax.barh([y + 0.2 for y in ys], front, 0.4, label="front", color="#4c72b0")
    ax.barh([y - 0.2 for y in ys], worker, 0.4, label="largest worker", color="#dd8452")
    ax.set_yticks(list(ys), names)
    ax.set_title("peak RSS serving the bench app, MiB")
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
