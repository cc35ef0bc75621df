"""Frames exchanged between the front and a worker over the worker's pipes.

A frame is one msgpack array ``[kind, *fields]``; msgpack is self-delimiting, so frames
need no length prefix. Bodies travel as msgpack ``bin`` so a chunk is never re-encoded,
and large chunks are written with ``writev`` behind a hand-built header instead of copied.

Front -> worker::

    [HELLO, {"app": spec, "sys_path": [...], "worker_id": int}]   once, at start
    [REQUEST, environ]        CGI part of the environ: str -> str
    [BODY, bytes]             a request body chunk, in order
    [EOF]                     the request body is complete
    [ABORT]                   the client went away: stop the response

Worker -> front::

    [READY, pid]              the app imported; the worker takes requests
    [FAILED, message]         the app did not import; the worker exits
    [START, status, headers]  status int, headers [[name, value], ...] as latin-1 bytes
    [BODY, bytes]             a response chunk, exactly as the app yielded it
    [END]                     the response is complete (after START)
    [ERROR, message]          the app failed; before START the front answers 500
    [LOG, level, message]     a line the app wrote to ``wsgi.errors``

The worker ignores everything but REQUEST while idle, so frames the front sent for a
request that has already ended (late body chunks, a late ABORT) are harmless.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import msgpack

from ._errors import ProtocolError

HELLO: Final = 0
REQUEST: Final = 1
BODY: Final = 2
EOF: Final = 3
ABORT: Final = 4
READY: Final = 10
FAILED: Final = 11
START: Final = 12
END: Final = 13
ERROR: Final = 14
LOG: Final = 15

#: Largest frame either side accepts; a bigger one means a broken peer.
MAX_FRAME: Final = 64 * 1024 * 1024
#: Bodies above this are split so no single frame approaches MAX_FRAME.
MAX_CHUNK: Final = 16 * 1024 * 1024

Frame = list[Any]

_packer = msgpack.Packer(use_bin_type=True, autoreset=True)
pack = _packer.pack

END_FRAME: Final = pack([END])
EOF_FRAME: Final = pack([EOF])
ABORT_FRAME: Final = pack([ABORT])


def body_header(size: int) -> bytes:
    """The bytes of ``[BODY, <bin of size bytes>]`` up to the payload itself."""
    if size < 0x100:
        return b"\x92\x02\xc4" + bytes((size,))
    if size < 0x10000:
        return b"\x92\x02\xc5" + struct.pack(">H", size)
    return b"\x92\x02\xc6" + struct.pack(">I", size)


def body_frames(chunk: bytes | bytearray | memoryview) -> list[bytes | memoryview]:
    """Pieces whose concatenation is one or more BODY frames carrying ``chunk``."""
    view = memoryview(chunk)
    if len(view) <= MAX_CHUNK:
        return [body_header(len(view)), view]
    pieces: list[bytes | memoryview] = []
    for start in range(0, len(view), MAX_CHUNK):
        part = view[start : start + MAX_CHUNK]
        pieces += (body_header(len(part)), part)
    return pieces


def request_frame(environ: dict[str, str]) -> bytes:
    return pack([REQUEST, environ])


def start_frame(status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    return pack([START, status, headers])


class FrameReader:
    """Incremental decoder: feed it bytes, take whole frames out.

    Any decoding problem becomes :class:`ProtocolError`, so callers have one thing to catch.
    """

    __slots__ = ("_unpacker",)

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._unpacker = msgpack.Unpacker(
            max_buffer_size=max_frame, raw=False, use_list=True, strict_map_key=True
        )

    def feed(self, data: bytes) -> list[Frame]:
        try:
            self._unpacker.feed(data)
            frames = list(self._unpacker)
        except Exception as exc:  # msgpack raises several unrelated types
            raise ProtocolError(f"undecodable frame: {exc!r}") from exc
        for frame in frames:
            if type(frame) is not list or not frame or type(frame[0]) is not int:
                raise ProtocolError(f"malformed frame: {frame!r:.200}")
        return frames
