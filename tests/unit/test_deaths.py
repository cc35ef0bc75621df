"""Why a worker died: the cgroup's OOM kill count read from a fake cgroup root (v2 and v1),
and what the log line and the metric label say for each kind of death."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from wsgipool._pool.deaths import EXIT_UNKNOWN, Death, oom_kills

V2_EVENTS = "low 0\nhigh 0\nmax 12\noom 3\noom_kill {}\noom_group_kill 0\n"
V1_CONTROL = "oom_kill_disable 0\nunder_oom 0\noom_kill {}\n"
OOM = "killed by SIGKILL, by the kernel's OOM killer: out of memory"


def fake_cgroup(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[str, str]:
    """A cgroup root with ``files`` in it, and a ``/proc/self/cgroup`` saying ``membership``."""
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(membership)
    return str(root), str(proc)


@pytest.mark.parametrize(
    ("membership", "name", "template"),
    [
        ("0::/system.slice/app.service\n", "system.slice/app.service/memory.events", V2_EVENTS),
        ("0::/\n", "memory.events", V2_EVENTS),  # a container with its own cgroup namespace
        ("0::/docker/abc\n", "memory.events", V2_EVENTS),  # the container's root mounted
        ("4:memory:/kubepods/pod1\n0::/\n", "memory/kubepods/pod1/memory.oom_control",
         V1_CONTROL),
        ("11:memory:/docker/abc\n", "memory/memory.oom_control", V1_CONTROL),
    ],
)  # fmt: skip
def test_the_oom_kill_count_is_read_before_and_after(
    tmp_path: Path, membership: str, name: str, template: str
) -> None:
    root, proc = fake_cgroup(tmp_path, membership, {name: template.format(4)})
    before = oom_kills(root, proc)
    assert before == 4
    (Path(root) / name).write_text(template.format(5))  # the kernel killed one meanwhile
    after = oom_kills(root, proc)
    assert after == 5
    death = Death(-signal.SIGKILL, before, after, sent_sigkill=False)
    assert death.cause == "oom"
    assert str(death) == OOM


@pytest.mark.parametrize(
    ("membership", "files"),
    [
        ("", {}),  # no cgroups at all
        ("0::/\n", {"cgroup.procs": ""}),  # no memory controller
        ("0::/\n", {"memory.events": "low 0\n"}),  # a kernel that does not count them
        ("0::/\n", {"memory.events": "oom_kill many\n"}),
    ],
)
def test_no_count_where_the_cgroup_cannot_tell(
    tmp_path: Path, membership: str, files: dict[str, str]
) -> None:
    root, proc = fake_cgroup(tmp_path, membership, files)
    assert oom_kills(root, proc) is None
    death = Death(-signal.SIGKILL, None, None, sent_sigkill=False)
    assert (death.cause, str(death)) == ("sigkill", "killed by SIGKILL")


def test_the_missing_membership_file_is_no_count(tmp_path: Path) -> None:
    assert oom_kills(str(tmp_path), str(tmp_path / "nowhere")) is None


@pytest.mark.parametrize(
    ("death", "cause", "text"),
    [
        (Death(-9, 2, 2, sent_sigkill=False), "sigkill",
         "killed by SIGKILL, by another process: not the OOM killer, says the cgroup"),
        (Death(-9, 2, 2, sent_sigkill=True), "sigkill", "killed by SIGKILL, sent by wsgipool"),
        (Death(-9, 2, 3, sent_sigkill=True), "oom", OOM),
        (Death(-11, 2, 3, sent_sigkill=False), "sigsegv", "killed by SIGSEGV"),
        (Death(3, 2, 3, sent_sigkill=False), "exit", "exit code 3"),
        (Death(EXIT_UNKNOWN, None, None, sent_sigkill=False), "unknown",
         "exit status known only to the preload template"),
    ],
)  # fmt: skip
def test_each_death_is_said_and_labelled(death: Death, cause: str, text: str) -> None:
    assert (death.cause, str(death)) == (cause, text)
