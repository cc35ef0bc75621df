"""Frame kinds: the number in each frame's header, the header itself, the size limits,
and the typed tuple each kind decodes to.

The encoders (``frames``) and the decoder (``reader``) both build on these; the protocol
itself is described in ``frames``.
"""

from __future__ import annotations

import signal
import struct
from typing import Any, Final, NamedTuple, TypedDict

HELLO: Final = 0
REQUEST: Final = 1
BODY: Final = 2
EOF: Final = 3
ABORT: Final = 4
FILE: Final = 5
SPILL: Final = 6
READY: Final = 10
FAILED: Final = 11
START: Final = 12
END: Final = 13
ERROR: Final = 14
LOG: Final = 15
SPILLED: Final = 16

#: Signals the front sends a busy worker (see ``wsgipool._worker.debug``): write every
#: thread's stack into the stack pipe; raise ``RequestTimeout`` in the app.
STACKS_SIGNAL: Final = signal.SIGUSR2
INTERRUPT_SIGNAL: Final = signal.SIGUSR1
#: Ends each dump in the stack pipe; faulthandler's text never holds a NUL byte.
END_MARK: Final = b"\0end of stacks\n"

#: Largest frame either side accepts; a bigger one means a broken peer.
MAX_FRAME: Final = 64 * 1024 * 1024
#: Bodies above this are split so no single frame approaches MAX_FRAME.
MAX_CHUNK: Final = 16 * 1024 * 1024


class _HelloRequired(TypedDict):
    app: Any  # an AppSpec (see _loader)
    sys_path: list[str]
    worker_id: int
    log_level: str


class Hello(_HelloRequired, total=False):
    """What a new worker (or the preload template) is told before it imports the app."""

    uid: int
    gid: int
    fork_fd: int  # preload: the template's end of the fork socket
    hooks: str  # the file of the server hooks, which the worker loads itself
    log_format: str  # "text" or "json"


class HelloFrame(NamedTuple):
    options: Hello


class Request(NamedTuple):
    environ: dict[str, str]


class Body(NamedTuple):
    data: bytes


class BodyFile(NamedTuple):
    path: str
    offset: int
    size: int


class Eof(NamedTuple):
    pass


class Abort(NamedTuple):
    pass


class Spill(NamedTuple):
    path: str
    allowance: int


class Spilled(NamedTuple):
    size: int


class Ready(NamedTuple):
    pid: int
    stacks: int  # the worker's descriptor of its stack pipe's read end (-1: none)


class Failed(NamedTuple):
    message: str
    traceback: str


class Start(NamedTuple):
    status: int
    headers: list[tuple[bytes, bytes]]


class End(NamedTuple):
    pass


class Error(NamedTuple):
    message: str
    pickled: bytes | None


class Log(NamedTuple):
    level: int
    message: str


Frame = (
    HelloFrame
    | Request
    | Body
    | BodyFile
    | Eof
    | Abort
    | Spill
    | Spilled
    | Ready
    | Failed
    | Start
    | End
    | Error
    | Log
)

#: A frame's header: payload length (big-endian uint32), then the kind (one byte).
HEADER: Final = struct.Struct(">IB")
