"""Running one request: the app called with its environ, the response streamed back.

One request at a time, in the worker's main thread: the channel is the worker's only
connection, and the app is synchronous.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Iterable
from types import FrameType
from typing import Any

from .._logging import request_id
from .._wire.environ import REQUEST_ID_KEY, complete_environ
from .._wire.frames import END_FRAME, ERROR, LOG, Request, body_frames, pack, start_frame
from .._wire.remote import dump
from .channel import Channel
from .debug import Signals
from .hooks import WorkerHooks
from .wsgi import (
    ClientDisconnected,
    ErrorStream,
    FileWrapper,
    InputStream,
    Responder,
    close_iterable,
)

#: Responses buffered in the worker before a write; lists are flushed once at the end.
FLUSH_AT = 256 * 1024
_HERE = os.path.dirname(os.path.abspath(__file__))


def _ours(frame: FrameType) -> bool:
    return os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _HERE


def app_traceback(exc: BaseException) -> str:
    """The traceback of an exception of the app, from the app's first frame on (the
    worker's own frames that called the app are left out)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and _ours(tb.tb_frame):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def request_line(environ: dict[str, Any]) -> str:
    """``"GET /path?query"``, as the client sent it, for the log."""
    target = environ.get("REQUEST_URI")
    if not target:
        query = environ.get("QUERY_STRING")
        target = environ.get("PATH_INFO", "") + (f"?{query}" if query else "")
    return f"{environ.get('REQUEST_METHOD')} {target}"


class Worker:
    """Runs requests against the app and streams the results into the channel."""

    def __init__(
        self, channel: Channel, app: Any, signals: Signals, hooks: WorkerHooks | None = None
    ) -> None:
        """The app is imported already; the worker only ever serves this one."""
        self.channel = channel
        self.app = app
        self.signals = signals
        self.hooks = WorkerHooks(None) if hooks is None else hooks
        self.responder = Responder(self.write)
        self.sent = 0
        self.errors = ErrorStream(self.emit_log)  # one per worker: it only holds a partial line

    def serve_forever(self) -> None:
        """Until the front closes the pipe (the channel then exits the process)."""
        while True:
            frame = self.channel.next_frame()
            if type(frame) is Request:
                self.handle(frame.environ)
            # anything else is a leftover of a finished request: ignore it

    def emit_log(self, line: str) -> None:
        """The front logs for the worker, so ``wsgi.errors`` lines share its handlers."""
        self.channel.send(pack(LOG, logging.ERROR, line))

    def handle(self, cgi: dict[str, Any]) -> None:
        """One request, ended by exactly one END or ERROR whatever the app does."""
        channel = self.channel
        channel.aborted = False
        self.responder = Responder(self.write)
        self.sent = 0
        environ = complete_environ(cgi, InputStream(channel.pull_body), self.errors, FileWrapper)
        token = request_id.set(cgi.get(REQUEST_ID_KEY))  # on the app's log lines
        try:
            self.run(environ)
        finally:
            request_id.reset(token)

    def run(self, environ: dict[str, Any]) -> None:
        """The app's call and its response, the response's ``close()``, then END or ERROR."""
        channel, responder = self.channel, self.responder
        result: Iterable[bytes] | None = None
        failure = None
        self.hooks.run("pre_request", environ)
        signals = self.signals
        try:
            try:
                signals.arm()  # from here, a timeout's interrupt is raised in the app ...
                result = self.app(environ, responder.start_response)
                self.stream(result, eager=type(result) in (list, tuple))
                if not responder.headers_sent:
                    self.queue_start()
                signals.disarm()  # ... until here
            except ClientDisconnected:
                pass
            except Exception as exc:
                failure = exc
        finally:
            signals.disarm()
            if result is not None:
                self.close(result)
            channel.close_body_file()
            channel.close_spill()
        if failure is None:
            channel.send(END_FRAME)
        else:
            self.fail(environ, failure)
        self.hooks.run("post_request", environ, responder.status)

    def close(self, result: Iterable[bytes]) -> None:
        """A failing ``close()`` is logged: the response itself may be complete."""
        try:
            close_iterable(result)
        except Exception:
            self.emit_log("Exception in close() of the response:\n" + traceback.format_exc())

    def fail(self, environ: dict[str, Any], exc: Exception) -> None:
        """Tell the front: the traceback as text, and the exception itself if it pickles
        (the front raises the app's own class, as asgiref does)."""
        text = f"Exception in WSGI app for {request_line(environ)}\n{app_traceback(exc)}"
        self.channel.discard_queued()
        self.channel.send(pack(ERROR, text, dump(exc)))

    def queue_start(self) -> None:
        """Headers go out with the first body chunk (or alone, for an empty body)."""
        responder = self.responder
        if responder.status is None:
            raise RuntimeError("the WSGI app did not call start_response()")
        responder.headers_sent = True
        self.channel.queue(start_frame(responder.status, responder.headers))

    def stream(self, result: Iterable[bytes], eager: bool) -> None:
        """A list is sent in few writes; a generator's chunks leave as they come, and a
        client gone between them stops it."""
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
