"""How many CPUs this process may use: the cgroup CPU quota, then the CPU affinity.

In a container the affinity is usually the whole node, while the quota (``docker
--cpus 2``, a Kubernetes CPU limit) is what the container may use; one worker per CPU
of the node would then be throttled together. cgroup v2 says it in ``cpu.max``
(``"200000 100000"``: 2 CPUs; ``"max 100000"``: no limit), v1 in ``cpu.cfs_quota_us``
(-1: no limit) over ``cpu.cfs_period_us``. The lowest quota on the way from the
process's own cgroup up to the root counts.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = "/sys/fs/cgroup"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, ValueError):
        return None


def _own_paths(proc_cgroup: str) -> dict[str, str]:
    """``/proc/self/cgroup`` -> controller -> path: ``""`` for v2's unified line."""
    paths = {}
    for line in proc_cgroup.splitlines():
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path.strip()
    return paths


def _upward(base: Path, path: str) -> list[Path]:
    """``base/a/b``, ``base/a``, ``base``: the cgroup and its ancestors."""
    parts = [part for part in path.split("/") if part]
    return [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _quota_v2(folder: Path) -> float | None:
    text = _read(folder / "cpu.max")
    if text is None:
        return None
    quota, _, period = text.partition(" ")
    if quota == "max" or not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return None
    return int(quota) / int(period)


def _quota_v1(folder: Path) -> float | None:
    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    if quota is None or period is None or not period.isdigit() or int(period) == 0:
        return None
    try:
        value = int(quota)
    except ValueError:
        return None
    return value / int(period) if value > 0 else None


def cgroup_cpus(
    root: str = CGROUP_ROOT, proc_cgroup: str | None = None
) -> tuple[float, str] | None:
    """The CPU quota of this process's cgroup and the file that says it, or None."""
    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup")) or ""
    own = _own_paths(proc_cgroup)
    base = Path(root)
    found: list[tuple[float, str]] = []
    for folder in _upward(base, own.get("", "/")):  # v2
        quota = _quota_v2(folder)
        if quota is not None:
            found.append((quota, str(folder / "cpu.max")))
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):  # v1, as mounted
        for folder in _upward(base / name, own.get("cpu", "/")):
            quota = _quota_v1(folder)
            if quota is not None:
                found.append((quota, str(folder / "cpu.cfs_quota_us")))
    return min(found) if found else None


def affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def usable_cpus(root: str = CGROUP_ROOT, proc_cgroup: str | None = None) -> tuple[int, str]:
    """CPUs to plan for, and where that came from (said in the start-up line): the
    quota rounded up, if lower than the affinity, else the affinity."""
    cpus = affinity()
    quota = cgroup_cpus(root, proc_cgroup)
    if quota is not None and math.ceil(quota[0]) < cpus:
        return max(math.ceil(quota[0]), 1), f"the CPU quota of {quota[0]:g} in {quota[1]}"
    return cpus, f"{cpus} CPUs in this process's affinity"
