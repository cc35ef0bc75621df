"""WSGI apps the tests serve; workers import them as ``apps:<name>``."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import random
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs
from wsgiref.validate import validator

Environ = dict[str, Any]


def _q(environ: Environ, name: str, default: str = "") -> str:
    return parse_qs(environ.get("QUERY_STRING", "")).get(name, [default])[0]


def open_files_in(directory: str) -> list[str]:
    """This process's descriptors of files in ``directory`` (unlinked ones included)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(f"{directory.rstrip('/')}/"):
            found.append(target)
    return found


def hello(environ: Environ, start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, world!"]


def pid(environ: Environ, start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


def environ_json(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """The environ as JSON (str values only), plus the types of the wsgi.* objects."""
    data = {k: v for k, v in environ.items() if isinstance(v, (str, bool, int, tuple))}
    data["wsgi.input.type"] = type(environ["wsgi.input"]).__name__
    data["has_file_wrapper"] = "wsgi.file_wrapper" in environ
    body = json.dumps(data).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def echo(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Echo the body, read the way ``?mode=`` says (read, readline, lines, iter, chunks)."""
    stream = environ["wsgi.input"]
    mode = _q(environ, "mode", "read")
    if mode == "read":
        body = stream.read()
    elif mode == "readline":
        body = b"|".join(iter(stream.readline, b""))
    elif mode == "lines":
        body = b"|".join(stream.readlines())
    elif mode == "iter":
        body = b"|".join(stream)
    else:  # chunks of N bytes
        size = int(mode)
        parts = []
        while part := stream.read(size):
            parts.append(part)
        body = b"".join(parts)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body]


def sized_echo(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Echo exactly CONTENT_LENGTH bytes, reading the way PEP 3333's validator accepts."""
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body]


def upload_size(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Read the body in 64 KiB blocks and answer its length: memory stays flat."""
    stream = environ["wsgi.input"]
    total = 0
    while block := stream.read(65536):
        total += len(block)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(total).encode()]


def _blocks(count: int, size: int) -> Iterator[bytes]:
    block = b"x" * size
    for _ in range(count):
        yield block


def download(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """``?mib=N``: N MiB in 64 KiB chunks, produced lazily."""
    mib = int(_q(environ, "mib", "1"))
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(mib << 20))],
    )
    return _blocks(mib * 16, 65536)


def pattern(size: int, seed: int = 0, block: int = 65536) -> Iterator[bytes]:
    """``size`` pseudo-random bytes in ``block``-sized pieces, the same for the same seed:
    a body whose every byte can be checked."""
    rng = random.Random(seed)
    while size > 0:
        piece = rng.randbytes(min(block, size))
        size -= len(piece)
        yield piece


def digest(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """The body's SHA-256 and size, and the CONTENT_LENGTH the app was given, as JSON."""
    stream = environ["wsgi.input"]
    hasher, size = hashlib.sha256(), 0
    while block := stream.read(65536):
        hasher.update(block)
        size += len(block)
    body = json.dumps(
        {"sha256": hasher.hexdigest(), "size": size, "length": environ.get("CONTENT_LENGTH")}
    )
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]


def random_download(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """``?mib=N&seed=S``: :func:`pattern` bytes, N MiB with a Content-Length."""
    size = int(_q(environ, "mib", "1")) << 20
    start_response("200 OK", [("Content-Length", str(size))])
    return pattern(size, int(_q(environ, "seed", "0")))


def line_echo(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Echoes each line of the body as soon as it has read it (a body processed as it
    arrives), with the worker's pid in ``X-Worker-Pid``."""
    stream = environ["wsgi.input"]
    start_response("200 OK", [("X-Worker-Pid", str(os.getpid()))])
    return iter(stream.readline, b"")


def refused(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Responses a WSGI app may produce that h11 refuses to send, by ``?how=``: a body on
    a 204 (``204``, or ``204-endless`` streamed until the app is told to stop), or an
    interim status as the final one (``1xx``); otherwise the worker's pid."""
    how = _q(environ, "how")
    if how == "1xx":
        start_response("103 Early Hints", [])
        return [b""]
    if how == "204":
        start_response("204 No Content", [])
        return [b"a body where none may be"]
    if how == "204-endless":
        start_response("204 No Content", [])
        return _endless()
    return pid(environ, start_response)


def slow_stream(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """``?n=N&every=S&mib=M``: N events of 10 bytes, one every S seconds (a slow producer,
    such as server-sent events or a long poll), then M MiB at once."""
    count, every = int(_q(environ, "n", "10")), float(_q(environ, "every", "0.2"))
    start_response("200 OK", [("Content-Type", "text/event-stream")])
    return _events(count, every, int(_q(environ, "mib", "0")))


def _events(count: int, every: float, mib: int) -> Iterator[bytes]:
    for i in range(count):
        time.sleep(every)
        yield b"data: %02d\n\n" % (i % 100)
    yield from _blocks(mib * 16, 65536)


class Tracked:
    """An iterable that records in a file when close() was called."""

    def __init__(self, path: str, chunks: Iterator[bytes]) -> None:
        self.path = path
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks

    def close(self) -> None:
        with open(self.path, "w") as f:
            f.write("closed")


def _endless() -> Iterator[bytes]:
    while True:
        time.sleep(0.005)
        yield b"tick\n"


def endless(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Streams forever; ``?marker=PATH`` gets "closed" written when close() runs."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Tracked(_q(environ, "marker"), _endless())


def _endless_blocks() -> Iterator[bytes]:
    block = b"b" * 65536
    while True:
        yield block


def endless_blocks(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """64 KiB blocks as fast as they are taken, forever; ``?marker=PATH`` as :func:`endless`."""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return Tracked(_q(environ, "marker"), _endless_blocks())


def closing(environ: Environ, start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Tracked(_q(environ, "marker"), iter([b"a", b"b"]))


class AppSpecificError(Exception):
    """An exception class of the app's own, with state beyond its message."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class NeedsTwoArguments(Exception):
    """An exception that pickles but does not unpickle (its args are not its
    ``__init__``'s arguments)."""

    def __init__(self, first: str, second: str) -> None:
        super().__init__(f"{first} {second}")


def fail(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Failures by ``?how=``."""
    how = _q(environ, "how")
    if how == "raise":
        raise RuntimeError("boom before headers")
    if how == "value":
        raise ValueError("a value error of the app")
    if how == "own":
        raise AppSpecificError("an error of the app's own", code=42)
    if how == "unpicklable":
        raise ValueError("carries a lock", threading.Lock())
    if how == "no-unpickle":
        raise NeedsTwoArguments("one", "two")
    if how == "os":
        raise FileNotFoundError(2, "No such file", "/nowhere")
    if how == "sigkill":
        os.kill(os.getpid(), 9)
    if how == "exit":
        os._exit(7)
    if how == "segfault":
        ctypes.string_at(0)
    if how == "status":
        start_response("OK", [])
    elif how == "header":
        start_response("200 OK", [("X-Bad", "a\r\nb")])
    elif how == "latin1":
        start_response("200 OK", [("X-Bad", "\u20ac")])
    elif how == "str":
        start_response("200 OK", [])
        return ["text"]  # type: ignore[list-item]
    elif how == "no-start":
        return [b"body"]
    elif how == "midway":
        start_response("200 OK", [])
        return _midway()
    elif how == "crash-midway":
        start_response("200 OK", [])
        return _crash_midway()
    elif how == "sleep":
        time.sleep(float(_q(environ, "s", "60")))
        start_response("200 OK", [])
    return [b"unreachable?"]


def _midway() -> Iterator[bytes]:
    yield b"first"
    raise RuntimeError("boom midway")


def _crash_midway() -> Iterator[bytes]:
    yield b"first"
    sys.stdout.flush()
    os.kill(os.getpid(), 9)
    yield b"never"


def exc_info_app(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Starts a 200, fails, and replaces it with a 500 through exc_info (PEP 3333)."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("changed my mind")
    except ValueError:
        start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
    return [b"handled"]


def printer(environ: Environ, start_response: Any) -> Iterable[bytes]:
    print("noise on stdout that must not reach the channel", flush=True)
    sys.stdout.write("\x92\x02\xc4\x05junk\n")
    sys.stdout.flush()
    os.write(1, b"raw fd 1 write\n")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"quiet"]


def writer(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Uses the write() callable, then returns more chunks."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"one,")
    write(b"two,")
    return [b"three"]


def long_length(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Declares 5 bytes, yields more (cut at 5, iteration stops)."""
    start_response("200 OK", [("Content-Length", "5")])
    return iter([b"abc", b"defgh", b"never"])


def empty_chunks(environ: Environ, start_response: Any) -> Iterable[bytes]:
    start_response("204 No Content", [])
    return [b"", b""]


def latin1_headers(environ: Environ, start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("X-Name", "caf\xe9")])
    return [b"ok"]


def errors_log(environ: Environ, start_response: Any) -> Iterable[bytes]:
    environ["wsgi.errors"].write("a line for the log\n")
    environ["wsgi.errors"].flush()
    start_response("200 OK", [])
    return [b"logged"]


def file_response(environ: Environ, start_response: Any) -> Iterable[bytes]:
    path = _q(environ, "path")
    start_response("200 OK", [("Content-Length", str(os.path.getsize(path)))])
    return environ["wsgi.file_wrapper"](open(path, "rb"), 8192)


def cwd(environ: Environ, start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [])
    return [os.getcwd().encode()]


class Holder:
    """An object whose bound method is the app (like ``flask_app.wsgi_app``)."""

    def wsgi(self, environ: Environ, start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [])
        return [b"held"]


holder = Holder()
Holder.app = holder  # type: ignore[attr-defined]


validated_hello = validator(hello)
validated_echo = validator(sized_echo)
validated_writer = validator(writer)


def _channel_fd() -> int:
    import gc

    for obj in gc.get_objects():
        if type(obj).__name__ == "Channel" and hasattr(obj, "wfd"):
            return int(obj.wfd)
    raise RuntimeError("no channel found")


_CORRUPT = {
    "huge": b"\x7f\xff\xff\xff\x02",  # a body frame claiming 2 GiB
    "kind": b"\x00\x00\x00\x01\x63\x00",  # a frame kind that does not exist
    "msgpack": b"\x00\x00\x00\x01\x0c\xc1",  # START with a byte msgpack never uses
    "shape": b"\x00\x00\x00\x02\x0c\x92\x01",  # START [1] with a missing field
    "log": b"\x00\x00\x00\x02\x0f\x91\x14",  # LOG [20]: the message is missing
    "headers": b"\x00\x00\x00\x0b\x0c\x92\xcc\xc8\x91\x92\xa3x-a\xa1b",  # START, str header
}


def corrupt(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Writes a malformed frame straight into the worker's channel, by ``?how=``;
    without ``how``, answers normally."""
    how = _q(environ, "how")
    if not how:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"fine"]
    os.write(_channel_fd(), _CORRUPT[how])
    time.sleep(30)
    return []


def spawner(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Starts a grandchild, reports its pid, then hangs."""
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    with open(_q(environ, "pidfile"), "w") as f:
        f.write(str(child.pid))
    time.sleep(120)
    return []


IMPORTED_AT = time.time()


def import_stamp(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """When this module was imported in the serving process, and that process's ids."""
    start_response("200 OK", [])
    return [f"{IMPORTED_AT} {os.getpid()} {os.getppid()}".encode()]


_HOARD: list[bytes] = []


def pid_sleep(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Answers its pid (body and ``X-Worker-Pid``) after ``?s=`` seconds.

    ``?marker=PATH`` writes the pid to PATH first; ``?mib=N`` allocates N MiB and keeps it
    for the life of the process.
    """
    marker = _q(environ, "marker")
    if marker:
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
    mib = int(_q(environ, "mib", "0"))
    if mib:
        _HOARD.append(b"m" * (mib << 20))
    time.sleep(float(_q(environ, "s", "0")))
    body = str(os.getpid()).encode()
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain"),
            ("Content-Length", str(len(body))),
            ("X-Worker-Pid", str(os.getpid())),
        ],
    )
    return [body]


def _first_then_sleep() -> Iterator[bytes]:
    yield b"first\n"
    time.sleep(60)  # deaf to any abort until it returns
    yield b"never\n"


def stream_then_hang(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Sends one chunk, then hangs inside its iterator."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Worker-Pid", str(os.getpid()))])
    return _first_then_sleep()


def env_probe(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """``?names=A,B``: those of the named environment variables this process has."""
    names = [name for name in _q(environ, "names").split(",") if name]
    body = json.dumps({name: os.environ[name] for name in names if name in os.environ})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]


def modules(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """The serving process's pid, parent pid and every module it has imported."""
    body = json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "modules": sorted(sys.modules)})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]


def supervised(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """``/hang``: :func:`stream_then_hang`; ``/env``: :func:`env_probe`; else :func:`pid_sleep`."""
    path = environ.get("PATH_INFO", "")
    if path == "/hang":
        return stream_then_hang(environ, start_response)
    if path == "/env":
        return env_probe(environ, start_response)
    return pid_sleep(environ, start_response)


def loose_headers(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Headers as Django and hand-written apps give them: padded values, lists for pairs."""
    body = str(os.getpid()).encode()
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain"),
            ("Set-Cookie", " csrftoken=abc; Path=/; SameSite=Lax"),
            ["X-Colour", "Blue"],
            ("X-Padded", "\t padded \t"),
            ("Content-Length", f" {len(body)} "),
        ],
    )
    return [body]


def logs(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Logs through the standard library, as apps that set up no logging of their own do."""
    import logging

    logging.getLogger("myapp").info("hello from the app")
    start_response("200 OK", [])
    return [b"logged"]


def early_or_digest(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """``/early``: answers 401 at once, reading none of the body; anything else: digest."""
    if environ["PATH_INFO"] != "/early":
        return digest(environ, start_response)
    start_response("401 Unauthorized", [("Content-Type", "text/plain")])
    return [b"x" * 65536] * 4


def pieces_download(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """``?size=N&block=B&seed=S&cl=1|0``: :func:`pattern` bytes, N of them yielded in
    B-byte pieces, with a Content-Length (``cl=1``, the default) or without."""
    size, block = int(_q(environ, "size", "0")), int(_q(environ, "block", "65536"))
    headers = [("Content-Type", "application/octet-stream")]
    if _q(environ, "cl", "1") == "1":
        headers.append(("Content-Length", str(size)))
    start_response("200 OK", headers)
    return pattern(size, int(_q(environ, "seed", "0")), block)


def datapath(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """POST: :func:`digest` of the body; anything else: :func:`pieces_download`."""
    if environ["REQUEST_METHOD"] == "POST":
        return digest(environ, start_response)
    return pieces_download(environ, start_response)


def logs_sleeps(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Logs a line with the standard library, sleeps ``?s=`` seconds, raises with
    ``?raise=1``, else answers ``app: PATH``."""
    import logging

    logging.getLogger("myapp").info("serving %s", environ["PATH_INFO"])
    time.sleep(float(_q(environ, "s", "0")))
    if _q(environ, "raise"):
        raise RuntimeError("a failure of the app\nover two lines")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"app: " + environ["PATH_INFO"].encode("latin-1")]
