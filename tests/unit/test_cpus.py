"""The default worker count from a fake cgroup tree: v2 ``cpu.max``, v1 CFS quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wsgipool._cpus import affinity, cgroup_cpus, usable_cpus

V2_SELF = "0::/kubepods/pod1/app\n"
V1_SELF = "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/\n"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


@pytest.fixture
def many_cpus(monkeypatch: pytest.MonkeyPatch) -> int:
    """A larger machine than a quota of 2 (whatever this one has)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    return 16


def test_v2_quota_of_2_on_a_larger_machine_gives_2(tmp_path: Path, many_cpus: int) -> None:
    write(tmp_path / "cpu.max", "max 100000")
    write(tmp_path / "kubepods/cpu.max", "max 100000")
    write(tmp_path / "kubepods/pod1/app/cpu.max", "200000 100000")
    assert affinity() == many_cpus
    count, why = usable_cpus(str(tmp_path), V2_SELF)
    assert count == 2
    assert why == f"the CPU quota of 2 in {tmp_path}/kubepods/pod1/app/cpu.max"


def test_v2_the_lowest_quota_up_the_tree_counts_and_rounds_up(
    tmp_path: Path, many_cpus: int
) -> None:
    write(tmp_path / "kubepods/cpu.max", "150000 100000")  # the pod's limit, 1.5 CPUs
    write(tmp_path / "kubepods/pod1/app/cpu.max", "max 100000")
    assert cgroup_cpus(str(tmp_path), V2_SELF) == (1.5, f"{tmp_path}/kubepods/cpu.max")
    assert usable_cpus(str(tmp_path), V2_SELF)[0] == 2


def test_v1_cfs_quota(tmp_path: Path, many_cpus: int) -> None:
    write(tmp_path / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "300000")
    write(tmp_path / "cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000")
    count, why = usable_cpus(str(tmp_path), V1_SELF)
    assert count == 3
    assert why.endswith("cpu,cpuacct/docker/abc/cpu.cfs_quota_us")


def test_no_quota_means_the_affinity(tmp_path: Path, many_cpus: int) -> None:
    write(tmp_path / "cpu.max", "max 100000")
    write(tmp_path / "cpu/cpu.cfs_quota_us", "-1")
    write(tmp_path / "cpu/cpu.cfs_period_us", "100000")
    assert cgroup_cpus(str(tmp_path), "0::/\n1:cpu:/\n") is None
    assert usable_cpus(str(tmp_path), "0::/\n") == (16, "16 CPUs in this process's affinity")
    assert usable_cpus(str(tmp_path / "missing"), V2_SELF)[0] == 16


def test_a_quota_above_the_affinity_leaves_the_affinity(tmp_path: Path, many_cpus: int) -> None:
    write(tmp_path / "cpu.max", "3200000 100000")  # 32 CPUs of quota, 16 to run on
    assert usable_cpus(str(tmp_path), "0::/\n")[0] == 16


def test_a_tiny_quota_is_still_one_worker(tmp_path: Path, many_cpus: int) -> None:
    write(tmp_path / "cpu.max", "10000 100000")
    assert usable_cpus(str(tmp_path), "0::/\n")[0] == 1
