"""Frames exchanged between the front and a worker over the worker's pipes.

A frame is a 5-byte header (payload length, big-endian uint32; kind, one byte) and the
payload. Body chunks are raw bytes, so a chunk is never re-encoded and a large one is
written with ``writev`` behind its header instead of copied; every other payload is a
msgpack array of the frame's fields. The length comes first so a reader can refuse an
oversized frame before buffering any of it.

Front -> worker::

    HELLO    options          a :class:`Hello` mapping, once, at start
    REQUEST  environ          the CGI part of the environ: str -> str
    BODY     <bytes>          a request body chunk, in order
    FILE     path, offset, size  the next ``size`` body bytes are in a file the front holds
                              (``/proc/<front>/fd/<n>``): the worker reads them itself
    EOF                       the request body is complete
    ABORT                     the client went away: stop the response
    SPILL    path, allowance  the client is behind: write up to ``allowance`` more body
                              bytes into the file the front holds (``/proc/<front>/fd/<n>``),
                              from its start, instead of into the pipe

Worker -> front::

    READY    pid, stacks      the app imported; the worker takes requests; ``stacks`` is
                              its stack pipe (``/proc/<pid>/fd/<stacks>``, -1: none),
                              where it writes its threads' stacks when signalled
    FAILED   message, tb      the app did not import; the worker exits
    START    status, headers  status int, headers [[name, value], ...] as latin-1 bytes
    BODY     <bytes>          a response chunk, exactly as the app yielded it
    SPILLED  size             the next response chunk is the spill file's next ``size`` bytes
    END                       the response is complete (after START)
    ERROR    message, pickled the app failed (its traceback; the exception pickled, or nil);
                              before START the front answers 500
    LOG      level, message   a line the app wrote to ``wsgi.errors``

Decoded, a frame is one of the small named tuples of ``kinds``, checked for shape by
``reader``, so neither side ever indexes into an unchecked list: anything malformed is a
:class:`ProtocolError` at the reader. The worker ignores everything but REQUEST while
idle, so frames the front sent for a request that has already ended (late body chunks,
a late ABORT) are harmless.
"""

from __future__ import annotations

import struct
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
    Hello,
    HelloFrame,
    Log,
    Ready,
    Request,
    Spill,
    Spilled,
    Start,
)
from .reader import FrameReader, decode

#: One namespace for both sides (``frames as proto``): the kinds, the reader, the encoders.
__all__ = [
    "ABORT", "ABORT_FRAME", "BODY", "END", "END_FRAME", "EOF", "EOF_FRAME", "ERROR",
    "FAILED", "FILE", "FORK_REPLY_SIZE", "HELLO", "LOG", "MAX_CHUNK", "MAX_FRAME", "READY",
    "REQUEST", "SPILL", "SPILLED", "START", "Abort", "Body", "BodyFile", "End", "Eof",
    "Error", "Failed", "Frame", "FrameReader", "Hello", "HelloFrame", "Log", "Ready",
    "Request", "Spill", "Spilled", "Start", "body_frames", "decode", "file_frame",
    "fork_reply", "fork_request", "hello_frame", "pack", "read_fork_reply",
    "read_fork_request", "request_frame", "spill_frame", "spilled_frame", "start_frame",
]  # fmt: skip

_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def pack(kind: int, *fields: Any) -> bytes:
    """One whole frame whose payload is the msgpack array of ``fields``."""
    payload = _packb(list(fields)) if fields else b""
    return HEADER.pack(len(payload), kind) + payload


END_FRAME: Final = pack(END)
EOF_FRAME: Final = pack(EOF)
ABORT_FRAME: Final = pack(ABORT)


def body_frames(chunk: bytes | bytearray | memoryview) -> list[bytes | memoryview]:
    """Pieces whose concatenation is one or more BODY frames carrying ``chunk``."""
    if len(chunk) <= MAX_CHUNK:
        return [HEADER.pack(len(chunk), BODY), chunk]  # type: ignore[list-item]
    view = memoryview(chunk)
    pieces: list[bytes | memoryview] = []
    for start in range(0, len(view), MAX_CHUNK):
        part = view[start : start + MAX_CHUNK]
        pieces += (HEADER.pack(len(part), BODY), part)
    return pieces


def hello_frame(options: Hello) -> bytes:
    return pack(HELLO, options)


def file_frame(path: str, offset: int, size: int) -> bytes:
    return pack(FILE, path, offset, size)


def spill_frame(path: str, allowance: int) -> bytes:
    return pack(SPILL, path, allowance)


def spilled_frame(size: int) -> bytes:
    return pack(SPILLED, size)


def request_frame(environ: dict[str, str]) -> bytes:
    return pack(REQUEST, environ)


def start_frame(status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    return pack(START, status, headers)


# -- preload: the fork socket between the front and the template (one datagram each) ----

_FORK_REQUEST = struct.Struct(">I")
_FORK_REPLY = struct.Struct(">II")
FORK_REPLY_SIZE: Final = _FORK_REPLY.size


def fork_request(worker_id: int) -> bytes:
    return _FORK_REQUEST.pack(worker_id)


def read_fork_request(message: bytes) -> int:
    return int(_FORK_REQUEST.unpack(message)[0])


def fork_reply(worker_id: int, pid: int) -> bytes:
    return _FORK_REPLY.pack(worker_id, pid)


def read_fork_reply(message: bytes) -> tuple[int, int]:
    """``(worker_id, pid)``; ProtocolError if the datagram is not a reply."""
    if len(message) != _FORK_REPLY.size:
        raise ProtocolError(f"malformed fork reply of {len(message)} bytes")
    worker_id, pid = _FORK_REPLY.unpack(message)
    return int(worker_id), int(pid)
