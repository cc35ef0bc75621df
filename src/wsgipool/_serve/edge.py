"""What the server layer of ``wsgipool serve`` checks while a request head arrives.

A :class:`HeadScanner` sees the raw bytes of one request head before the HTTP parser
does, and refuses it (414/431) as soon as a line or the count of lines is over a limit,
so a 10 MB header line is never buffered whole. It only counts newlines: the parser
still decides what the head means, and ``_guard.refusal`` checks the parsed result.
"""

from __future__ import annotations

import contextlib
import functools
import resource
from dataclasses import dataclass, field
from typing import Any

from .._front.guard import Limits, Refusal, Refusals

#: Open connections at most by default, fewer when the descriptor limit is low. Above a
#: flood of a thousand connections that all do real work (slow readers), so a newcomer is
#: still served; far below what memory allows (a connection costs the front some KiB).
MAX_CONNECTIONS = 4096
#: Descriptors one connection may hold: its socket, its response's spool file and the
#: spill file its worker writes into.
FILES_PER_CONNECTION = 3
#: Seconds a connection gets to send a complete request head (nginx's
#: client_header_timeout is 60 s, Apache's mod_reqtimeout 20-40 s).
HEADER_TIMEOUT = 20.0


@dataclass(frozen=True)
class EdgeSettings:
    """The server layer's policy and where it counts what it refuses."""

    limits: Limits
    header_timeout: float | None
    max_connections: int | None
    refusals: Refusals
    #: bytes/s below which an upload may be shed for a new connection (min_client_rate)
    min_upload_rate: int = 0
    #: the connections idle between requests (kept alive), the longest idle first
    idle: dict[Any, None] = field(default_factory=dict, compare=False, repr=False)

    @functools.cached_property
    def head_cap(self) -> int | None:
        """The most bytes a request head may take with every limit at its largest."""
        limits = self.limits
        if not (limits.request_line and limits.fields and limits.field_size):
            return None
        return limits.request_line + 2 + limits.fields * (limits.field_size + 2) + 2


class Sheddable:
    """The cheapest connection to close for a new one, found in one pass: a connection
    already refused (lingering) first, then the head begun longest ago (a connection that
    sent nothing included), then the upload with the fewest bytes per second below the
    floor. (Idle kept-alive connections come before all of them, from their registry.)"""

    __slots__ = ("head", "head_since", "refused", "upload", "upload_rate")

    def __init__(self) -> None:
        self.refused: Any = None
        self.head: Any = None
        self.head_since = float("inf")
        self.upload: Any = None
        self.upload_rate = float("inf")

    def consider_head(self, conn: Any, since: float) -> None:
        if since < self.head_since:
            self.head, self.head_since = conn, since

    def consider_upload(self, conn: Any, rate: float, floor: float) -> None:
        if rate < floor and rate < self.upload_rate:
            self.upload, self.upload_rate = conn, rate

    def pick(self) -> tuple[Any, str] | None:
        """The connection to close and the reason counted for it; None: all do real work."""
        if self.refused is not None:
            return self.refused, "shed refused"
        if self.head is not None:
            return self.head, "shed head"
        if self.upload is not None:
            return self.upload, "shed upload"
        return None


def max_connections_for(open_files: int, workers: int) -> int:
    """:data:`MAX_CONNECTIONS`, or fewer when the descriptor limit is lower: each
    connection may hold :data:`FILES_PER_CONNECTION` descriptors, each worker a few (pipes,
    its pidfd), and the front needs some of its own."""
    reserve = 64 + 4 * workers
    return max(1, min(MAX_CONNECTIONS, (open_files - reserve) // FILES_PER_CONNECTION))


def raise_open_files() -> tuple[int, int]:
    """Raise the soft limit of open files to the hard one, as nginx's
    ``worker_rlimit_nofile`` does: ``(before, after)`` (unlimited counts as the kernel's
    ``nr_open``). A soft limit of 1024 would otherwise bound the connections, not memory."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = hard
    if hard == resource.RLIM_INFINITY:
        ceiling = 1 << 20
        with contextlib.suppress(OSError, ValueError), open("/proc/sys/fs/nr_open") as file:
            ceiling = int(file.read())
    before = ceiling if soft == resource.RLIM_INFINITY else soft
    if before < ceiling:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
            return before, ceiling
    return before, before


def small_head(data: bytes, limits: Limits) -> bool:
    """Does ``data`` begin with a whole head too small to pass any limit? (The usual
    case, checked with two scans in C; else a :class:`HeadScanner` looks line by line.)"""
    end = data.find(b"\r\n\r\n")
    if not 0 < end <= limits.shortest_line:
        return False
    return not limits.fields or data.count(b"\n", 0, end) <= limits.fields


class HeadScanner:
    """Counts the lines of one request head as its bytes arrive, from its first byte."""

    __slots__ = ("cr", "done", "limits", "line", "lines")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.line = 0  # bytes of the current line so far
        self.cr = False  # the current line's last byte so far is a CR
        self.lines = 0  # complete lines, the request line first
        self.done = False  # the blank line that ends the head has been seen

    def feed(self, data: bytes) -> Refusal | None:
        """Account for ``data``; the refusal once a limit is passed."""
        start = 0
        while not self.done:
            end = data.find(b"\n", start)
            if end < 0:
                if len(data) > start:
                    self.line += len(data) - start
                    self.cr = data[-1] == 13
                return self.check(self.line - 1)  # a CR may end it
            ends_in_cr = data[end - 1] == 13 if end > start else self.cr and self.line > 0
            length = self.line + end - start - ends_in_cr
            self.line, self.cr, start = 0, False, end + 1
            if length == 0:
                self.done = self.lines > 0  # the blank line; before the request line: ignored
                continue
            found = self.check(length)
            if found is None:
                self.lines += 1
                found = self.limits.count_refusal(self.lines - 1)
            if found is not None:
                return found
        return None

    def check(self, length: int) -> Refusal | None:
        if self.lines == 0:
            return self.limits.line_refusal(length)
        return self.limits.field_refusal(length)
