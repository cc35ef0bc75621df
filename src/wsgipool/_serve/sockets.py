"""Listening sockets handed over by whoever started us: ``--fd N`` and systemd's
socket activation (``LISTEN_FDS``/``LISTEN_PID``, sd_listen_fds(3)).

The socket is already bound and listening; we only take it over, so the port or socket
file stays with systemd across restarts and no connection is refused meanwhile.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

from .host import Listener

#: The first descriptor systemd passes (SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3


def systemd_fds(environ: MutableMapping[str, str]) -> list[int]:
    """The descriptors systemd passed to this process, if it passed any to *us* (not to
    a parent that exec'd us); the variables are then removed, so workers do not see them."""
    count, pid = environ.get("LISTEN_FDS", ""), environ.get("LISTEN_PID", "")
    if not count.isdigit() or not pid.isdigit() or int(pid) != os.getpid():
        return []
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        environ.pop(name, None)
    return list(range(LISTEN_FDS_START, LISTEN_FDS_START + int(count)))


def inherited(fd: int) -> Listener:
    """A listening stream socket on descriptor ``fd``; OSError if it is not one."""
    sock = socket.socket(fileno=fd)  # family and type as the kernel says
    try:
        if sock.type != socket.SOCK_STREAM:
            raise OSError(0, f"descriptor {fd} is not a stream socket")
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise OSError(0, f"descriptor {fd} is not listening")
        sock.set_inheritable(False)  # the workers get nothing of it
    except OSError:
        sock.detach()  # not ours to close
        raise
    if sock.family == socket.AF_UNIX:
        return Listener(sock, f"unix:{sock.getsockname()} (fd {fd})")
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
    return Listener(sock, f"http://{shown}:{port} (fd {fd})")


def parse_fds(text: str) -> tuple[int, ...]:
    """``"3"`` or ``"3,4"`` -> the descriptors, each at least 3 (0-2 are stdio)."""
    fds = tuple(part.strip() for part in text.split(",") if part.strip())
    if not fds or not all(fd.isdigit() and int(fd) >= LISTEN_FDS_START for fd in fds):
        raise ValueError(f"must be descriptor numbers of 3 or more, got {text!r}")
    return tuple(int(fd) for fd in fds)


def parse_mode(text: str) -> int:
    """``"660"`` or ``"0o660"`` -> 0o660: a file mode, in octal as chmod takes it."""
    digits = text.strip().lower().removeprefix("0o")
    try:
        mode = int(digits, 8)
    except ValueError:
        raise ValueError(f"must be an octal file mode such as 660, got {text!r}") from None
    if not 0 <= mode <= 0o777:
        raise ValueError(f"must be an octal file mode such as 660, got {text!r}")
    return mode
