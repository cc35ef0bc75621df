"""The synchronous pieces of PEP 3333 that a worker hands to the app.

``Responder`` holds the rules of ``start_response`` (also used by
``WsgiToAsgiInstance.start_response``); ``InputStream`` is ``wsgi.input`` over body
chunks pulled from the front on demand; ``ErrorStream`` is ``wsgi.errors``;
``FileWrapper`` is ``wsgi.file_wrapper``.
"""

from __future__ import annotations

import io
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from .._types import Headers, OptExcInfo

_STATUS = re.compile(r"([1-9][0-9][0-9]) [^\r\n]*\Z")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


class ClientDisconnected(OSError):
    """The client went away while the app was reading the body or sending the response."""


def _is_token(name: str) -> bool:
    """An RFC 9110 token; the usual ``Content-Type`` shape is checked without a regex."""
    if name.isascii() and name.replace("-", "").isalnum():
        return True
    return _TOKEN.match(name) is not None


def parse_status(status: object) -> int:
    """``"200 OK"`` -> ``200``; anything not of the form ``"NNN reason"`` is a ValueError."""
    match = _STATUS.match(status) if isinstance(status, str) else None
    if match is None:
        raise ValueError(f"WSGI status must look like '200 OK', got {status!r}")
    return int(match.group(1))


def _pair(item: object) -> tuple[object, object]:
    """A header as the app gave it: any two-item sequence (tuple, list), as asgiref allows."""
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1]
    if isinstance(item, Sequence) and not isinstance(item, (str, bytes)) and len(item) == 2:
        return item[0], item[1]
    raise TypeError(f"WSGI response header must be a (name, value) pair, got {item!r}")


def encode_headers(headers: object) -> tuple[Headers, int | None]:
    """Validate WSGI response headers; return them as latin-1 bytes and the Content-Length.

    Values lose their leading and trailing spaces and tabs: RFC 9110 optional whitespace
    is not part of a field value, and strict servers (h11) refuse a value that starts with
    one (Django writes ``Set-Cookie`` values with a leading space).
    """
    if not isinstance(headers, list):
        raise TypeError(f"WSGI response headers must be a list, got {type(headers).__name__}")
    encoded: Headers = []
    content_length = None
    for item in headers:
        name, value = _pair(item)
        if not (isinstance(name, str) and _is_token(name)):
            raise ValueError(f"invalid response header name {name!r}")
        if not isinstance(value, str) or "\r" in value or "\n" in value or "\0" in value:
            raise ValueError(f"invalid value for response header {name!r}: {value!r}")
        value = value.strip(" \t")
        try:
            pair = (name.lower().encode("latin-1"), value.encode("latin-1"))
        except UnicodeEncodeError as exc:
            raise ValueError(f"response header {name!r} is not latin-1: {value!r}") from exc
        if pair[0] == b"content-length":
            if not (value.isascii() and value.isdigit()):
                raise ValueError(f"invalid Content-Length {value!r}")
            content_length = int(value)
        encoded.append(pair)
    return encoded, content_length


class Responder:
    """State of one response as ``start_response`` sees it (PEP 3333 rules, asgiref errors)."""

    __slots__ = ("content_length", "headers", "headers_sent", "status", "write")

    def __init__(self, write: Callable[[bytes], object]) -> None:
        """Fresh per response: ``write`` is the worker's (or the front's) own."""
        self.write = write
        self.status: int | None = None
        self.headers: Headers = []
        self.content_length: int | None = None
        self.headers_sent = False

    def start_response(
        self,
        status: str,
        response_headers: list[tuple[str, str]],
        exc_info: OptExcInfo | None = None,
    ) -> Callable[[bytes], object]:
        """PEP 3333's rules, with asgiref's messages: an app moved from asgiref fails alike."""
        if exc_info is not None and exc_info[0] is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # break the frame <-> traceback cycle
        elif self.status is not None:
            raise ValueError("You cannot call start_response a second time without exc_info")
        code = parse_status(status)
        self.headers, self.content_length = encode_headers(response_headers)
        self.status = code
        return self.write


class InputStream(io.RawIOBase):
    """``wsgi.input``: reads pull body chunks from the front only when the app asks.

    The chunk being read is kept as it arrived, with an offset: a read is one slice of it
    (or a join across chunks), never a copy into and out of a growing buffer.
    """

    def __init__(self, pull: Callable[[], bytes | None]) -> None:
        """Nothing is pulled yet: a body the app never reads is never fetched."""
        self._pull = pull
        self._chunk = b""
        self._pos = 0
        self._eof = False

    def readable(self) -> bool:
        """``io`` asks before reading; the body is always readable."""
        return True

    def _next(self) -> bool:
        """Replace the used-up chunk with the next one; False at the end of the body."""
        if self._eof:
            return False
        chunk = self._pull()
        if chunk is None:
            self._eof = True
            return False
        self._chunk, self._pos = chunk, 0
        return True

    def _slice(self, size: int) -> bytes:
        """A whole chunk is handed on as it is; only a part of one is copied."""
        pos = self._pos
        self._pos = pos + size
        if pos == 0 and size >= len(self._chunk):
            return self._chunk  # the whole chunk: no copy
        return self._chunk[pos : pos + size]

    def read(self, size: int | None = -1) -> bytes:
        """Few copies: one slice for a read within a chunk, one join across chunks."""
        if size is None or size < 0:
            size = 1 << 62
        parts: list[bytes] = []
        while size:
            left = len(self._chunk) - self._pos
            if not left:
                if not self._next():
                    break
                continue
            part = self._slice(min(size, left))
            parts.append(part)
            size -= len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        """For ``io.BufferedReader`` and friends, which read into their own buffer."""
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer)[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        """Stops at the newline or ``size``, pulling only as many chunks as the line spans."""
        limit = size if size is not None and size >= 0 else 1 << 62
        parts: list[bytes] = []
        while limit:
            left = len(self._chunk) - self._pos
            if not left:
                if not self._next():
                    break
                continue
            newline = self._chunk.find(b"\n", self._pos, self._pos + min(limit, left))
            take = min(limit, left) if newline < 0 else newline + 1 - self._pos
            parts.append(self._slice(take))
            limit -= take
            if newline >= 0:
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        """Over our ``readline``, so no line is read twice; ``hint`` as ``io`` defines it."""
        limit = hint if hint is not None and hint > 0 else 1 << 62  # io: None, <= 0: all
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if total >= limit:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        """Line by line, as PEP 3333 requires of ``wsgi.input``."""
        while line := self.readline():
            yield line


class ErrorStream(io.TextIOBase):
    """``wsgi.errors``: whole lines go to ``emit`` (the front's logging)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        """``emit`` sends a whole line to the front; a partial one waits here."""
        self._emit = emit
        self._partial = ""

    def writable(self) -> bool:
        """``io`` asks before writing; the stream is always writable."""
        return True

    def write(self, text: str) -> int:
        """Apps write fragments; the front logs whole lines, so only those leave."""
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        """An app that flushes wants its partial line seen now."""
        if self._partial:
            self._emit(self._partial)
            self._partial = ""


class FileWrapper:
    """``wsgi.file_wrapper``: a real file is read in large blocks straight from its fd."""

    #: Smallest block the wrapper reads; small blocks only cost frames and syscalls.
    MIN_BLOCK = 256 * 1024

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        """A tiny block size would only cost frames and syscalls, so it is raised."""
        self.filelike = filelike
        self.blksize = max(blksize, self.MIN_BLOCK)

    def close(self) -> None:
        """PEP 3333: closing the wrapper closes the file, as the server's close() calls it."""
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()

    def _fd(self) -> int | None:
        """A regular file's descriptor, for ``pread``; None for anything else."""
        try:
            fd = int(self.filelike.fileno())
            return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return None

    def __iter__(self) -> Iterator[bytes]:
        """A real file by ``pread`` in large blocks (its position kept in step); anything
        else by ``read``."""
        fd = self._fd()
        if fd is not None:
            offset = self.filelike.tell()
            while block := os.pread(fd, self.blksize, offset):
                offset += len(block)
                yield block
            self.filelike.seek(offset)
            return
        while block := self.filelike.read(self.blksize):
            yield block


def close_iterable(result: Iterable[bytes]) -> None:
    """PEP 3333: the server calls ``close()`` on the app's iterable, whatever happened."""
    close = getattr(result, "close", None)
    if close is not None:
        close()
