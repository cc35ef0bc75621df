"""Decoding: whole frames out of the bytes a pipe delivers, each checked for shape.

Every problem (unknown kind, oversized frame, bad msgpack, wrong fields) is a
:class:`ProtocolError` here, so neither side ever indexes into an unchecked list.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final

import msgpack

from .._errors import ProtocolError
from .kinds import (
    ABORT,
    BODY,
    END,
    EOF,
    ERROR,
    FAILED,
    FILE,
    HEADER,
    HELLO,
    LOG,
    MAX_CHUNK,
    MAX_FRAME,
    READY,
    REQUEST,
    SPILL,
    SPILLED,
    START,
    Abort,
    Body,
    BodyFile,
    End,
    Eof,
    Error,
    Failed,
    Frame,
    HelloFrame,
    Log,
    Ready,
    Request,
    Spill,
    Spilled,
    Start,
)


def _want(kind: str, fields: list[Any], count: int) -> None:
    if len(fields) != count:
        raise ProtocolError(f"{kind} frame with {len(fields)} fields, expected {count}")


def _typed(kind: str, value: Any, *types: type) -> Any:
    if type(value) not in types:
        raise ProtocolError(f"{kind} frame field of type {type(value).__name__}: {value!r:.100}")
    return value


def _hello(fields: list[Any]) -> Frame:
    _want("HELLO", fields, 1)
    return HelloFrame(_typed("HELLO", fields[0], dict))


def _request(fields: list[Any]) -> Frame:
    _want("REQUEST", fields, 1)
    return Request(_typed("REQUEST", fields[0], dict))


def _file(fields: list[Any]) -> Frame:
    _want("FILE", fields, 3)
    path, offset, size = fields
    return BodyFile(
        _typed("FILE", path, str), _typed("FILE", offset, int), _typed("FILE", size, int)
    )


def _spill(fields: list[Any]) -> Frame:
    _want("SPILL", fields, 2)
    return Spill(_typed("SPILL", fields[0], str), _typed("SPILL", fields[1], int))


def _spilled(fields: list[Any]) -> Frame:
    _want("SPILLED", fields, 1)
    size = _typed("SPILLED", fields[0], int)
    if not 0 < size <= MAX_CHUNK:
        raise ProtocolError(f"SPILLED frame of {size} bytes")
    return Spilled(size)


def _ready(fields: list[Any]) -> Frame:
    _want("READY", fields, 2)
    return Ready(_typed("READY", fields[0], int), _typed("READY", fields[1], int))


def _failed(fields: list[Any]) -> Frame:
    _want("FAILED", fields, 2)
    return Failed(_typed("FAILED", fields[0], str), _typed("FAILED", fields[1], str))


def _start(fields: list[Any]) -> Frame:
    _want("START", fields, 2)
    status, raw = fields
    if type(status) is not int or not 100 <= status <= 999:
        raise ProtocolError(f"bad status in START frame: {status!r:.100}")
    try:
        headers = [(name, value) for name, value in raw]
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed headers in START frame: {raw!r:.200}") from exc
    for name, value in headers:
        if type(name) is not bytes or type(value) is not bytes:
            raise ProtocolError(f"START frame header not bytes: {name!r:.100}")
    return Start(status, headers)


def _error(fields: list[Any]) -> Frame:
    _want("ERROR", fields, 2)
    return Error(_typed("ERROR", fields[0], str), _typed("ERROR", fields[1], bytes, type(None)))


def _log(fields: list[Any]) -> Frame:
    _want("LOG", fields, 2)
    return Log(_typed("LOG", fields[0], int), _typed("LOG", fields[1], str))


_EMPTY: dict[int, Frame] = {EOF: Eof(), ABORT: Abort(), END: End()}
_DECODERS: dict[int, Callable[[list[Any]], Frame]] = {
    HELLO: _hello,
    REQUEST: _request,
    FILE: _file,
    SPILL: _spill,
    SPILLED: _spilled,
    READY: _ready,
    FAILED: _failed,
    START: _start,
    ERROR: _error,
    LOG: _log,
}


def decode(kind: int, payload: bytes) -> Frame:
    """The typed frame of ``kind`` carried by ``payload`` (not for BODY)."""
    if kind in _EMPTY:
        if payload:
            raise ProtocolError(f"frame kind {kind} carries an unexpected payload")
        return _EMPTY[kind]
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise ProtocolError(f"unknown frame kind {kind}")
    try:
        fields = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"undecodable frame payload: {exc!r}") from exc
    if type(fields) is not list:
        raise ProtocolError(f"malformed frame payload: {fields!r:.200}")
    return decoder(fields)


class FrameReader:
    """Reads a pipe into one reusable buffer and decodes the whole frames in it.

    Reading into a buffer that lives as long as the channel avoids allocating (and, for
    large reads, mapping and unmapping) a new bytes object per read; each body byte is
    copied once, into the chunk handed on. Every decoding problem (unknown kind, oversized
    frame, bad msgpack, wrong shape) becomes :class:`ProtocolError`, so callers have one
    thing to catch.
    """

    __slots__ = ("_buf", "_end", "_max", "_need", "_size", "_start", "_view")

    #: Compact or grow the buffer before a read when less than this is free at its end.
    MIN_FREE = 64 * 1024
    #: Size of the buffer at rest; one larger frame grows it, and it shrinks back after.
    SIZE: Final = 256 * 1024
    #: A buffer grown past this is given back once it is empty.
    SHRINK_ABOVE = 4 * 1024 * 1024

    def __init__(self, max_frame: int = MAX_FRAME, size: int = SIZE) -> None:
        self._max = max_frame
        self._size = size
        self._buf = bytearray(size)
        self._view = memoryview(self._buf)
        self._start = self._end = self._need = 0

    @property
    def capacity(self) -> int:
        """Bytes the buffer holds now (it grows for large frames and shrinks back)."""
        return len(self._buf)

    def read_from(self, fd: int) -> list[Frame]:
        """One ``read(2)`` from ``fd``; the frames it completed. EOFError at end of file.

        BlockingIOError passes through for non-blocking descriptors.
        """
        if len(self._buf) - self._end < self.MIN_FREE or self._need > len(self._buf):
            self._make_room()
        count = os.readv(fd, [self._view[self._end :]])
        if not count:
            raise EOFError
        self._end += count
        return self._decode_buffer()

    def feed(self, data: bytes) -> list[Frame]:
        """Decode ``data`` as if it had been read (for peers that are not pipes)."""
        self._need = max(self._need, self._end - self._start + len(data))
        self._make_room()
        self._view[self._end : self._end + len(data)] = data
        self._end += len(data)
        return self._decode_buffer()

    def _make_room(self) -> None:
        pending = self._end - self._start
        size = max(len(self._buf), self._need + self.MIN_FREE, pending + self.MIN_FREE)
        if size > len(self._buf):
            buf = bytearray(size)
            buf[:pending] = self._view[self._start : self._end]
            self._view.release()
            self._buf, self._view = buf, memoryview(buf)
        elif self._start:
            self._view[:pending] = self._view[self._start : self._end]
        self._start, self._end = 0, pending

    def _decode_buffer(self) -> list[Frame]:
        frames: list[Frame] = []
        view, pos, end = self._view, self._start, self._end
        unpack_header = HEADER.unpack_from
        while end - pos >= 5:
            size, kind = unpack_header(view, pos)
            if size > self._max:
                raise ProtocolError(f"frame of {size} bytes exceeds the {self._max} byte limit")
            stop = pos + 5 + size
            if stop > end:
                self._need = stop - pos
                break
            if kind == BODY:
                frames.append(Body(bytes(view[pos + 5 : stop])))
            else:
                frames.append(decode(kind, bytes(view[pos + 5 : stop])))
            pos = stop
        if pos == end:
            self._start = self._end = self._need = 0
            if len(self._buf) > self.SHRINK_ABOVE:  # give back what one huge frame needed
                self._view.release()
                self._buf = bytearray(self._size)
                self._view = memoryview(self._buf)
        else:
            self._start = pos
        return frames
