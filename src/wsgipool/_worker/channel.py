"""The worker's end of its two pipes to the front: blocking reads, gathered writes.

Besides the frames themselves, the channel holds what the front may hand over for one
request: a body file to read (FILE) and a spill file to write the response into (SPILL).
"""

from __future__ import annotations

import os
import select
import threading
from collections import deque

from .._wire.frames import MAX_CHUNK, Abort, Body, BodyFile, Eof, Frame, Spill, spilled_frame
from .._wire.reader import FrameReader
from .debug import Signals
from .wsgi import ClientDisconnected

#: Bytes read at once from a body file the front hands over.
FILE_BLOCK = 256 * 1024


class Channel:
    """The worker's end of its two pipes: blocking reads and gathered writes."""

    def __init__(self, rfd: int, wfd: int) -> None:
        """Start with nothing pending: the front speaks first (HELLO, then REQUEST)."""
        self.rfd, self.wfd = rfd, wfd
        self.signals: Signals | None = None  # set once the worker serves: see debug.py
        self.reader = FrameReader()
        self.pending: deque[Frame] = deque()
        self.out: list[bytes | memoryview] = []
        self.out_size = 0
        self.aborted = False
        self.body_file: list[int] | None = None  # [fd, offset, end] of a FILE being read
        self.spill: list[int] | None = None  # [fd, offset, allowance left] of a SPILL
        # App threads may write to wsgi.errors while the main thread streams the response:
        # whole frames only, so queueing and flushing take turns.
        self.lock = threading.RLock()

    def _read(self) -> None:
        """Block for the next read; the front closing the pipe ends the worker quietly."""
        try:
            self.pending.extend(self.reader.read_from(self.rfd))
        except EOFError:
            raise SystemExit(0) from None  # the front closed the pipe or died

    def next_frame(self) -> Frame:
        """One frame at a time, though a single read may bring several."""
        while not self.pending:
            self._read()
        return self.pending.popleft()

    def pull_body(self) -> bytes | None:
        """The next request body chunk, ``None`` at the end; raises if the client left.

        Pulled only when the app reads, so a body the app ignores costs nothing."""
        while True:
            if self.body_file is not None:
                chunk = self._read_body_file()
                if chunk:
                    return chunk
            frame = self.next_frame()
            if type(frame) is Body:
                return frame.data
            if type(frame) is BodyFile:
                fd = os.open(frame.path, os.O_RDONLY | os.O_CLOEXEC)
                self.body_file = [fd, frame.offset, frame.offset + frame.size]
                continue
            if type(frame) is Eof:
                return None
            if type(frame) is Abort:
                self.aborted = True
                raise ClientDisconnected("client disconnected while the body was read")
            if type(frame) is Spill:  # the app reads its body after its response began
                self._open_spill(frame)

    def _read_body_file(self) -> bytes:
        """The next block of the body file the front named; b"" (and closed) at its end."""
        assert self.body_file is not None
        fd, offset, end = self.body_file
        chunk = os.pread(fd, min(FILE_BLOCK, end - offset), offset) if offset < end else b""
        if chunk:
            self.body_file[1] = offset + len(chunk)
        else:
            self.close_body_file()
        return chunk

    def close_body_file(self) -> None:
        """A request the app left unread must not keep the front's file open."""
        if self.body_file is not None:
            os.close(self.body_file[0])
            self.body_file = None

    def check_abort(self) -> bool:
        """Non-blocking: has the front asked to stop this response? (A SPILL it sent
        meanwhile is taken up too.)"""
        if not self.aborted and select.select([self.rfd], [], [], 0)[0]:
            self._read()
            kept: deque[Frame] = deque()
            for frame in self.pending:
                if type(frame) is Abort:
                    self.aborted = True
                elif type(frame) is Spill:
                    self._open_spill(frame)
                else:
                    kept.append(frame)
            self.pending = kept
        return self.aborted

    def _open_spill(self, frame: Spill) -> None:
        """The client is behind: the front's spill file takes the rest of the body. If it
        cannot be opened, the body goes on through the pipe, as it would anyway."""
        if self.spill is None:
            try:
                fd = os.open(frame.path, os.O_WRONLY | os.O_CLOEXEC)
            except OSError:
                return
            self.spill = [fd, 0, frame.allowance]

    def spill_chunk(self, chunk: bytes) -> bool:
        """Write ``chunk`` into the spill file and say so in the pipe; False (and the spill
        is over) if it does not fit the allowance or cannot be written."""
        assert self.spill is not None
        fd, offset, left = self.spill
        if len(chunk) > left:
            self.close_spill()
            return False
        view = memoryview(chunk)
        try:
            done = 0
            while done < len(view):
                done += os.pwrite(fd, view[done:], offset + done)
        except OSError:  # disk full: what did not fit goes through the pipe
            self.close_spill()
            return False
        self.spill[1:] = [offset + done, left - done]
        with self.lock:
            for start in range(0, done, MAX_CHUNK):
                self.queue(spilled_frame(min(MAX_CHUNK, done - start)))
            self.out_size += done  # flushed as often as if it had gone into the pipe
        return True

    def close_spill(self) -> None:
        """A spill lasts one response; the next one starts in the pipe again."""
        if self.spill is not None:
            os.close(self.spill[0])
            self.spill = None

    def queue(self, piece: bytes | memoryview) -> None:
        """Hold a piece back so many of them leave in one ``writev``."""
        with self.lock:
            self.out.append(piece)
            self.out_size += len(piece)

    def queue_pieces(self, pieces: list[bytes | memoryview]) -> None:
        """As :meth:`queue`, for a header and its body chunk taken together."""
        with self.lock:
            for piece in pieces:
                self.out.append(piece)
                self.out_size += len(piece)

    def discard_queued(self) -> None:
        """The app failed: what it had queued must not reach the front before ERROR."""
        with self.lock:
            self.out.clear()
            self.out_size = 0

    def flush(self) -> None:
        """Write what is queued, taking turns with threads that log."""
        with self.lock:
            self._write_out()

    def _write_out(self) -> None:
        """Write every queued piece; a timeout's interrupt never cuts a frame in half."""
        signals = self.signals
        if signals is None or not signals.hold():
            self._write_pieces()
            return
        try:
            self._write_pieces()
        finally:
            signals.release()

    def _write_pieces(self) -> None:
        """Write every queued piece, however the pipe splits the writes."""
        pieces, self.out, self.out_size = self.out, [], 0
        if len(pieces) < 512:  # the common case: one call writes it all
            written = os.writev(self.wfd, pieces)
            if written == sum(map(len, pieces)):
                return
            while pieces and written >= len(pieces[0]):
                written -= len(pieces.pop(0))
            if written:
                pieces[0] = memoryview(pieces[0])[written:]
        while pieces:
            written = os.writev(self.wfd, pieces[:512])
            while pieces and written >= len(pieces[0]):
                written -= len(pieces.pop(0))
            if written:
                pieces[0] = memoryview(pieces[0])[written:]

    def send(self, frame: bytes) -> None:
        """A frame that must leave now, after whatever was queued before it."""
        with self.lock:
            self.queue(frame)
            self._write_out()
