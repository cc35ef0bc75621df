"""Bodies the front holds for a slow peer: in memory while a budget allows, then on disk.

A :class:`Spool` is a FIFO of chunks. Chunks stay in memory up to a per-spool limit and
while the front-wide :class:`~wsgipool._front.budget.BufferBudget` has room; beyond that
they are appended to an unlinked temporary file (``O_TMPFILE`` where Linux has it), so
nothing is left on disk when the request ends, whether it ends normally, is cancelled, or
the front is killed.
Chunk boundaries are kept, so what goes in as one chunk comes out as one chunk.

A response spool can also have a second file, the *spill file*, which the worker writes
itself (see ``Relay``): the front then only records where each chunk lies (:meth:`adopt`)
and copies nothing until the client reads it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections import deque
from collections.abc import MutableSequence

from .budget import BufferBudget, Holder

#: Bytes of one spool kept in memory before it writes to its file.
MEMORY_PER_SPOOL = 1024 * 1024
#: Bytes gathered before one write to the file.
WRITE_AT = 1024 * 1024
#: The spool's own file, in a chunk's place on disk (its descriptor is opened lazily).
OWN = -1
#: Largest chunk that spilled chunks are merged into (see :meth:`Spool.adopt`).
MERGE_SPILLED = 1024 * 1024
#: A spool that need not keep chunk boundaries (a request body) joins small chunks up to
#: this size: a body sent as millions of 1-byte chunks is not millions of objects.
MERGE_UP_TO = 64 * 1024


#: Least a worker is allowed to spill at once when the disk budget is tight (at most a
#: quarter of the budget; responses further behind are cut to make room): past its
#: allowance the worker writes into the pipe and the front copies every byte to disk.
SPILL_LEAST = 64 * 1024 * 1024


class SpoolError(Exception):
    """The spool's file could not be made, written or read (disk full, no ``buffer_dir``)."""


class DiskBudgetSpent(SpoolError):
    """No room within the front-wide budget of bytes on disk, and this spool pays for it."""


class Spool:
    """Chunks in arrival order, in memory first and then in temporary files."""

    __slots__ = ("_budget", "_dir", "_disk", "_fd", "_head", "_holder", "_in_memory", "_memory",
                 "_merge", "_out", "_out_held", "_out_size", "_reserved", "_spill_at",
                 "_spill_fd", "_write_at", "on_disk_size", "size", "split")  # fmt: skip

    def __init__(
        self,
        budget: BufferBudget,
        directory: str | None = None,
        merge: bool = False,
        holder: Holder | None = None,
    ) -> None:
        self._budget = budget
        self._holder = holder  # who pays when the disk budget is spent (None: refuse)
        self._reserved = 0  # of the budget's reservation, what the worker may still spill
        self._dir = directory
        self._merge = merge  # chunk boundaries do not matter: small chunks are joined
        self._memory: deque[bytes | bytearray] = deque()
        self._in_memory = 0
        self._fd = -1
        self._write_at = 0  # where the next chunk goes in the own file (``_out`` first)
        self._disk: deque[tuple[int, int, int]] = deque()  # (fd or OWN, offset, size)
        self._out: list[bytes | bytearray] = []  # chunks bound for the own file, written together
        self._out_size = 0
        self._out_held = 0  # of those, taken from the budget
        self._spill_fd = -1
        self._spill_at = 0  # where the worker's next chunk lies in the spill file
        self._head = 0  # bytes of the first chunk in memory already handed out
        self.size = 0  # bytes held, in memory and on disk
        self.on_disk_size = 0  # ... of them on disk
        self.split = False  # the last get() left the rest of its chunk first in line

    @property
    def claim(self) -> int:
        """Bytes of the disk budget this spool holds or has promised its worker."""
        return self.on_disk_size + self._reserved

    @property
    def on_disk(self) -> bool:
        """Has the spool begun to use a file (so new chunks go there, after the others)?"""
        return bool(self._disk)

    def put(self, chunk: bytes) -> None:
        size = len(chunk)
        if (
            not self._disk
            and self._in_memory + size <= MEMORY_PER_SPOOL
            and self._budget.take(size)
        ):
            if self._merge:
                _join(self._memory, chunk)
            else:
                self._memory.append(chunk)
            self._in_memory += size
        else:
            self._write(chunk)
        self.size += size

    def _write(self, chunk: bytes) -> None:
        """Queue ``chunk`` for the file; a write call per ``WRITE_AT`` bytes, not per chunk
        (a body arrives in many small pieces)."""
        size = len(chunk)
        if not self._budget.room_on_disk(size, self._holder):
            raise DiskBudgetSpent("the front's budget of bytes on disk is spent")
        offset = self._write_at + self._out_size
        if not (self._merge and _extend(self._disk, OWN, offset, size, WRITE_AT)):
            self._disk.append((OWN, offset, size))
        self._budget.on_disk += size
        self.on_disk_size += size
        if self._merge:
            _join(self._out, chunk)
        else:
            self._out.append(chunk)
        self._out_size += size
        # What waits to be written is memory too: it counts against the budget.
        if self._budget.take(size):
            self._out_held += size
            if self._out_size < WRITE_AT:
                return
        self._flush()

    def _flush(self) -> None:
        if not self._out:
            return
        try:
            self._write_out()
        except OSError as exc:
            raise SpoolError(f"cannot write a spool file: {exc}") from exc

    def _write_out(self) -> None:
        if self._fd < 0:
            self._fd = _temporary_file(self._dir)
        pieces: list[bytes | bytearray | memoryview] = list(self._out)
        while pieces:
            written = os.pwritev(self._fd, pieces[:512], self._write_at)
            self._write_at += written
            while pieces and written >= len(pieces[0]):
                written -= len(pieces.pop(0))
            if written:
                pieces[0] = memoryview(pieces[0])[written:]
        self._out.clear()
        self._out_size = 0
        self._budget.give(self._out_held)
        self._out_held = 0

    def spill_file(self) -> int:
        """The descriptor of the spill file, made on first use; SpoolError if it cannot be."""
        if self._spill_fd < 0:
            try:
                self._spill_fd = _temporary_file(self._dir)
            except OSError as exc:
                raise SpoolError(f"cannot make a spill file: {exc}") from exc
        return self._spill_fd

    def reserve(self, most: int) -> int:
        """Up to ``most`` bytes the worker may write into the spill file, set aside in the
        disk budget (cutting responses further behind to make room): the bytes granted."""
        budget = self._budget
        room, limit = budget.disk_room(), budget.disk_limit
        if room is not None and limit is not None:  # a share of what is left, not all of it
            most = min(most, max(room // 4, min(SPILL_LEAST, limit // 4)))
            if not budget.room_on_disk(most, self._holder):
                return 0
        self._reserved += most
        budget.reserved += most
        return most

    def unreserve(self) -> None:
        """The worker writes no more (its response ended): what it did not use is free."""
        self._budget.reserved -= self._reserved
        self._reserved = 0

    def adopt(self, size: int, merge: bool = False) -> bool:
        """The spill file's next ``size`` bytes (the worker wrote them) are the next chunk,
        or, with ``merge``, the end of the last one when it lies just before them (up to
        ``MERGE_SPILLED``): True if merged. A client far behind cares for bytes, not
        chunks, and a 64 MiB response is not a thousand entries."""
        offset = self._spill_at
        self._spill_at += size
        self._budget.on_disk += size
        self.on_disk_size += size
        taken = min(size, self._reserved)
        self._reserved -= taken
        self._budget.reserved -= taken
        self.size += size
        if merge and _extend(self._disk, self._spill_fd, offset, size, MERGE_SPILLED):
            return True
        self._disk.append((self._spill_fd, offset, size))
        return False

    def get(self, limit: int | None = None) -> bytes | None:
        """The oldest chunk, or None if the spool is empty. With ``limit``, at most that
        many of its bytes: the rest stays first in line, and :attr:`split` says so."""
        self.split = False
        if self._memory:
            held, start = self._memory[0], self._head
            if limit is not None and len(held) - start > limit:
                chunk = bytes(held[start : start + limit])
                self._head += limit
                self.split = True
            else:
                self._memory.popleft()
                self._head = 0
                chunk = bytes(held[start:]) if start or type(held) is not bytes else held
                self._in_memory -= len(held)
                self._budget.give(len(held))
        elif self._disk:
            fd, offset, size = self._disk[0]
            if limit is not None and size > limit:
                self._disk[0] = (fd, offset + limit, size - limit)
                size = limit
                self.split = True
            else:
                self._disk.popleft()
            self._budget.on_disk -= size  # gone from the count even if it cannot be read
            self.on_disk_size -= size
            if fd == OWN:
                self._flush()
                fd = self._fd
            chunk = self._read(fd, offset, size)
            if not self._disk:  # the own file starts over: what it holds was read
                self._write_at = 0
        else:
            return None
        self.size -= len(chunk)
        return chunk

    def _read(self, fd: int, offset: int, size: int) -> bytes:
        parts = []
        try:
            while size:
                part = os.pread(fd, size, offset)
                if not part:
                    raise OSError("spool file ended early")
                parts.append(part)
                offset += len(part)
                size -= len(part)
        except OSError as exc:
            raise SpoolError(f"cannot read a spool file: {exc}") from exc
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def hand_over(self) -> tuple[list[bytes | bytearray], tuple[int, int, int] | None]:
        """Everything held, for a reader that takes the file part itself: the chunks in
        memory, and ``(fd, offset, size)`` of the bytes in the own file (None if none). The
        spool is empty afterwards but keeps its file open until :meth:`close`. (A request
        body's spool: it has no spill file.)"""
        chunks = list(self._memory)
        if chunks and self._head:
            chunks[0] = chunks[0][self._head :]
        self._budget.give(self._in_memory)
        self._memory.clear()
        self._in_memory = self._head = 0
        region = None
        if self._disk:
            self._flush()
            offset = self._disk[0][1]
            region = (self._fd, offset, self._write_at - offset)
            self._forget_disk()
        self.size = 0
        return chunks, region

    def _forget_disk(self) -> None:
        self._budget.on_disk -= sum(size for _, _, size in self._disk)
        self.on_disk_size = 0
        self._disk.clear()

    def close(self) -> None:
        """Drop everything held (idempotent); closing the files frees them."""
        self._budget.give(self._in_memory)
        self._memory.clear()
        self._in_memory = self._head = 0
        self._forget_disk()
        self._out.clear()
        self._out_size = 0
        self._budget.give(self._out_held)
        self._out_held = 0
        self.unreserve()
        self.size = 0
        for fd in (self._fd, self._spill_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._spill_fd = -1
        self._write_at = self._spill_at = 0


def _join(pieces: MutableSequence[bytes | bytearray], chunk: bytes) -> None:
    """Append ``chunk``, or join it to the last piece (grown in place) while that stays
    within ``MERGE_UP_TO``: for spools that keep no chunk boundaries."""
    if pieces and len(pieces[-1]) + len(chunk) <= MERGE_UP_TO:
        last = pieces[-1]
        if type(last) is bytes:
            pieces[-1] = last = bytearray(last)
        last += chunk  # a bytearray: grown in place
    else:
        pieces.append(chunk)


def _extend(disk: deque[tuple[int, int, int]], fd: int, offset: int, size: int, most: int) -> bool:
    """Grow the last region on disk by ``size`` bytes if they lie right after it in the
    same file and it stays within ``most`` bytes; False if a region of its own is due."""
    if disk:
        last_fd, start, held = disk[-1]
        if last_fd == fd and start + held == offset and held + size <= most:
            disk[-1] = (fd, start, held + size)
            return True
    return False


def _temporary_file(directory: str | None) -> int:
    """A file with no name: the kernel frees it when the descriptor closes, however."""
    where = directory or tempfile.gettempdir()
    flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
    if hasattr(os, "O_TMPFILE"):
        with contextlib.suppress(OSError):
            return os.open(where, flags | os.O_TMPFILE, 0o600)
    fd, path = tempfile.mkstemp(dir=where, prefix="wsgipool-")
    os.unlink(path)
    return fd
