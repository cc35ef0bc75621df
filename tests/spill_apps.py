"""Apps for the tests of the worker-side spill (test_spill.py)."""

from __future__ import annotations

import os
import resource
import signal
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

from apps import open_files_in, pattern


def _opts(environ: dict[str, Any]) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def mixed(size: int, seed: int, block: int) -> Iterator[bytes]:
    """4 MiB of 64 KiB pieces (the spool goes to disk, the front asks for a spill), then
    ``block``-sized pieces."""
    first = min(size, 4 << 20)
    yield from pattern(first, seed)
    yield from pattern(size - first, seed + 1, block)


def _body(
    size: int, seed: int, block: int, empty: bool, kill_at: int, pause: float = 0
) -> Iterator[bytes]:
    sent = 0
    for piece in mixed(size, seed, block):
        if pause:
            time.sleep(pause)
        if kill_at and sent >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        yield piece
        sent += len(piece)
        if empty:
            yield b""


class Closing:
    def __init__(self, it: Iterable[bytes], marker: str) -> None:
        self.it = iter(it)
        self.marker = marker

    def __iter__(self) -> Iterator[bytes]:
        return self.it

    def close(self) -> None:
        if self.marker:
            with open(self.marker, "w") as f:
                f.write("closed")


def spilling(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """``?mib=N&seed=S&block=B&how=iter|write|list|file&empty=1&cl=C&kill_mib=K&fsize=F``"""
    o = _opts(environ)
    size = int(float(o.get("mib", "32")) * (1 << 20))
    seed = int(o.get("seed", "0"))
    block = int(o.get("block", "65536"))
    how = o.get("how", "iter")
    if "fsize" in o:  # this worker's files may not grow past fsize bytes (a "full disk")
        limit = int(o["fsize"])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    length = o.get("cl", str(size))
    headers = [("Content-Type", "application/octet-stream")]
    if length != "none":
        headers.append(("Content-Length", length))
    write = start_response("200 OK", headers)
    body = _body(
        size,
        seed,
        block,
        o.get("empty") == "1",
        int(float(o.get("kill_mib", "0")) * (1 << 20)),
        float(o.get("pause", "0")),
    )
    if how == "write":
        for piece in body:
            write(piece)
        return Closing([], o.get("marker", ""))
    if how == "list":
        return list(body)
    if how == "file":
        f = tempfile.TemporaryFile()  # noqa: SIM115 (the file wrapper closes it)
        for piece in body:
            f.write(piece)
        f.seek(0)
        return environ["wsgi.file_wrapper"](f, block)
    return Closing(body, o.get("marker", ""))


def fds_in(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """The worker's descriptors of files in ``?dir=``, one a line."""
    found = open_files_in(_opts(environ)["dir"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ["\n".join(found).encode()]
