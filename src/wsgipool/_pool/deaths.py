"""Why a worker died: its exit status, and whether the kernel's OOM killer killed it.

Linux counts the OOM kills in each memory cgroup: cgroup v2 in ``memory.events``, v1 in
``memory.oom_control`` (kernel 4.13 and later), both as a line ``oom_kill N``. The front
reads its own cgroup's count (the workers are in it too) when a worker starts and again
once it died by SIGKILL: a higher count means the OOM killer struck meanwhile, most
likely that worker. Where no count can be read (not Linux, no memory controller), a
SIGKILL is only a SIGKILL.
"""

from __future__ import annotations

import os
import signal

CGROUP_ROOT = "/sys/fs/cgroup"
MEMBERSHIP = "/proc/self/cgroup"


def _count_in(path: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return None


def _candidates(root: str, membership: str) -> list[str]:
    """The files that may hold the count, most specific first (``/proc/self/cgroup``
    names the cgroup; inside a container the root itself is often the container's)."""
    try:
        with open(membership) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    found: list[str] = []
    for line in lines:
        _, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "-", "")
        if controllers == "":  # v2: the unified hierarchy
            found += [os.path.join(root, path.lstrip("/"), "memory.events"),
                      os.path.join(root, "memory.events")]  # fmt: skip
        elif "memory" in controllers.split(","):  # v1
            found += [os.path.join(root, "memory", path.lstrip("/"), "memory.oom_control"),
                      os.path.join(root, "memory", "memory.oom_control")]  # fmt: skip
    return found


def oom_kills(root: str | None = None, membership: str | None = None) -> int | None:
    """The OOM kills counted in this process's memory cgroup (under ``root``, by default
    ``CGROUP_ROOT``); None if it cannot be read."""
    for path in _candidates(root or CGROUP_ROOT, membership or MEMBERSHIP):
        count = _count_in(path)
        if count is not None:
            return count
    return None


def describe_exit(code: int | None) -> str:
    """``"killed by SIGKILL"``, ``"exit code 3"``, for a log line."""
    if code is None:
        return "still running"
    if code == EXIT_UNKNOWN:
        return "exit status known only to the preload template"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


#: Exit status of a forked worker: its parent is the template, which reaps it.
EXIT_UNKNOWN = -1000


class Death:
    """A worker's exit, said once: whether the OOM killer did it is learnt from the
    cgroup's count before (at its start) and after (at its death)."""

    def __init__(self, code: int, oom_before: int | None, oom_after: int | None,
                 sent_sigkill: bool) -> None:  # fmt: skip
        self.code = code
        self.oom = (
            code == -signal.SIGKILL
            and oom_before is not None
            and oom_after is not None
            and oom_after > oom_before
        )
        self.known = oom_before is not None and oom_after is not None
        self.sent_sigkill = sent_sigkill

    @property
    def cause(self) -> str:
        """A metric label: ``oom``, ``sigkill``, ``sigsegv``..., ``exit``, ``unknown``."""
        if self.oom:
            return "oom"
        if self.code == EXIT_UNKNOWN:
            return "unknown"
        if self.code < 0:
            return describe_exit(self.code).rpartition(" ")[2].lower()
        return "exit"

    def __str__(self) -> str:
        text = describe_exit(self.code)
        if self.code != -signal.SIGKILL:
            return text
        if self.oom:
            return f"{text}, by the kernel's OOM killer: out of memory"
        if self.sent_sigkill:
            return f"{text}, sent by wsgipool"
        if self.known:
            return f"{text}, by another process: not the OOM killer, says the cgroup"
        return text
