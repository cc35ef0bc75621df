"""The worker process: import the app once, then serve one request at a time.

Started by the pool as ``python -u -m wsgipool._worker FRONT_PID``. The channel is the
process's original stdin/stdout pipes; both are moved to private descriptors first, and
fd 1 is pointed at stderr, so nothing the app prints can corrupt a frame.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import socket
import sys
import threading
import traceback
from collections import deque
from collections.abc import Iterable
from typing import Any

from .._errors import AppLoadError
from .._logging import after_app_import, configure_worker
from .._titles import set_title
from .._wire.appspec import app_traceback, label, load
from .._wire.environ import complete_environ
from .._wire.frames import (
    END_FRAME,
    ERROR,
    FAILED,
    LOG,
    MAX_CHUNK,
    READY,
    Abort,
    Body,
    BodyFile,
    Eof,
    Frame,
    FrameReader,
    Hello,
    HelloFrame,
    Request,
    Spill,
    body_frames,
    fork_reply,
    pack,
    read_fork_request,
    spilled_frame,
    start_frame,
)
from .._wire.remote import dump
from .wsgi import (
    ClientDisconnected,
    ErrorStream,
    FileWrapper,
    InputStream,
    Responder,
    close_iterable,
)

log = logging.getLogger("wsgipool.worker")

#: Responses buffered in the worker before a write; lists are flushed once at the end.
FLUSH_AT = 256 * 1024
#: Bytes read at once from a body file the front hands over.
FILE_BLOCK = 256 * 1024


class Channel:
    """The worker's end of its two pipes: blocking reads and gathered writes."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd, self.wfd = rfd, wfd
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
        try:
            self.pending.extend(self.reader.read_from(self.rfd))
        except EOFError:
            raise SystemExit(0) from None  # the front closed the pipe or died

    def next_frame(self) -> Frame:
        while not self.pending:
            self._read()
        return self.pending.popleft()

    def pull_body(self) -> bytes | None:
        """The next request body chunk, ``None`` at the end; raises if the client left."""
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
        if self.spill is not None:
            os.close(self.spill[0])
            self.spill = None

    def queue(self, piece: bytes | memoryview) -> None:
        with self.lock:
            self.out.append(piece)
            self.out_size += len(piece)

    def queue_pieces(self, pieces: list[bytes | memoryview]) -> None:
        with self.lock:
            for piece in pieces:
                self.out.append(piece)
                self.out_size += len(piece)

    def discard_queued(self) -> None:
        with self.lock:
            self.out.clear()
            self.out_size = 0

    def flush(self) -> None:
        with self.lock:
            self._write_out()

    def _write_out(self) -> None:
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
        with self.lock:
            self.queue(frame)
            self._write_out()


class Worker:
    """Runs requests against the app and streams the results into the channel."""

    def __init__(self, channel: Channel, app: Any) -> None:
        self.channel = channel
        self.app = app
        self.responder = Responder(self.write)
        self.sent = 0
        self.errors = ErrorStream(self.emit_log)  # one per worker: it only holds a partial line

    def serve_forever(self) -> None:
        while True:
            frame = self.channel.next_frame()
            if type(frame) is Request:
                self.handle(frame.environ)
            # anything else is a leftover of a finished request: ignore it

    def emit_log(self, line: str) -> None:
        self.channel.send(pack(LOG, logging.ERROR, line))

    def handle(self, cgi: dict[str, Any]) -> None:
        channel = self.channel
        channel.aborted = False
        self.responder = responder = Responder(self.write)
        self.sent = 0
        environ = complete_environ(cgi, InputStream(channel.pull_body), self.errors, FileWrapper)
        result: Iterable[bytes] | None = None
        failure = None
        try:
            try:
                result = self.app(environ, responder.start_response)
                self.stream(result, eager=type(result) in (list, tuple))
                if not responder.headers_sent:
                    self.queue_start()
            except ClientDisconnected:
                pass
            except Exception as exc:
                failure = exc
        finally:
            if result is not None:
                self.close(result)
            channel.close_body_file()
            channel.close_spill()
        if failure is None:
            channel.send(END_FRAME)
        else:
            self.fail(environ, failure)

    def close(self, result: Iterable[bytes]) -> None:
        try:
            close_iterable(result)
        except Exception:
            self.emit_log("Exception in close() of the response:\n" + traceback.format_exc())

    def fail(self, environ: dict[str, Any], exc: Exception) -> None:
        """Tell the front: the traceback as text, and the exception itself if it pickles
        (the front raises the app's own class, as asgiref does)."""
        request = f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}"
        tb = "".join(traceback.format_exception(exc))
        self.channel.discard_queued()
        self.channel.send(pack(ERROR, f"Exception in WSGI app for {request}\n{tb}", dump(exc)))

    def queue_start(self) -> None:
        responder = self.responder
        if responder.status is None:
            raise RuntimeError("the WSGI app did not call start_response()")
        responder.headers_sent = True
        self.channel.queue(start_frame(responder.status, responder.headers))

    def stream(self, result: Iterable[bytes], eager: bool) -> None:
        channel = self.channel
        for chunk in result:
            if not isinstance(chunk, bytes):
                raise TypeError(f"WSGI app yielded {type(chunk).__name__}, not bytes")
            if self.queue_body(chunk):
                break
            if not eager or channel.out_size >= FLUSH_AT:
                channel.flush()
                if channel.check_abort():
                    return

    def queue_body(self, chunk: bytes) -> bool:
        """Queue one chunk, cut to Content-Length; True once Content-Length is reached."""
        if not self.responder.headers_sent:
            self.queue_start()
        limit = self.responder.content_length
        if limit is not None and self.sent + len(chunk) > limit:
            self.emit_log(f"response body longer than its Content-Length ({limit}); cut")
            chunk = chunk[: limit - self.sent]
        channel = self.channel
        if channel.spill is None or not chunk or not channel.spill_chunk(chunk):
            channel.queue_pieces(body_frames(chunk))
        self.sent += len(chunk)
        return self.sent == limit

    def write(self, data: bytes) -> None:
        """PEP 3333 ``write()``: the data leaves before ``write`` returns."""
        if not isinstance(data, bytes):
            raise TypeError(f"write() takes bytes, not {type(data).__name__}")
        self.queue_body(data)
        self.channel.flush()
        if self.channel.check_abort():
            raise ClientDisconnected("client disconnected")


def _die_with_parent(front_pid: int) -> None:
    """Ask Linux to SIGKILL us when the front dies, however it dies."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != front_pid:
        os._exit(1)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    _die_with_parent(int(argv[0]))
    rfd, wfd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # print() goes to stderr, never into the channel
    os.close(devnull)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the front decides when workers stop
    channel = Channel(rfd, wfd)
    hello = channel.next_frame()
    if not isinstance(hello, HelloFrame):
        raise SystemExit(f"wsgipool worker: expected HELLO, got {hello!r:.100}")
    options = hello.options
    if "uid" in options:  # drop privileges before any app code runs
        os.setgroups([])
        os.setgid(options["gid"])
        os.setuid(options["uid"])
    sys.path[:] = options["sys_path"]
    level = options.get("log_level", "INFO")
    configure_worker(level)
    set_title(f"wsgipool: worker {options['worker_id']} [{label(options['app'])}]")
    os.environ["WSGIPOOL_WORKER_LOADING"] = "1"
    try:
        app = load(options["app"])
    except AppLoadError as exc:
        channel.send(pack(FAILED, str(exc), app_traceback(exc)))
        raise SystemExit(3) from None
    del os.environ["WSGIPOOL_WORKER_LOADING"]
    after_app_import(level)  # a root handler only if the app's framework set up none
    if "fork_fd" in options:
        run_template(channel, app, options)
    channel.send(pack(READY, os.getpid()))
    Worker(channel, app).serve_forever()


def run_template(channel: Channel, app: Any, options: Hello) -> None:
    """Preload mode: the app is imported; fork a worker for each request of the front."""
    sock = socket.socket(fileno=options["fork_fd"])
    signal.signal(signal.SIGCHLD, _reap_children)
    set_title(f"wsgipool: template [{label(options['app'])}]")
    channel.send(pack(READY, os.getpid()))
    while True:
        message, fds, _, _ = socket.recv_fds(sock, 16, 2)
        if not message:
            raise SystemExit(0)  # the front is gone
        worker_id = read_fork_request(message)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                sock.close()
                for fd in (channel.rfd, channel.wfd):
                    os.close(fd)
                _serve_forked(app, fds[0], fds[1], worker_id, options)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        for fd in fds:
            os.close(fd)
        sock.send(fork_reply(worker_id, pid))


def _reap_children(signum: int, frame: object) -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _serve_forked(app: Any, rfd: int, wfd: int, worker_id: int, options: Hello) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()  # its own process group, as a spawned worker has
    _die_with_parent(os.getppid())
    set_title(f"wsgipool: worker {worker_id} [{label(options['app'])}]")
    channel = Channel(rfd, wfd)
    channel.send(pack(READY, os.getpid()))
    Worker(channel, app).serve_forever()
