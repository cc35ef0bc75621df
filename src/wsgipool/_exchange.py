"""One HTTP request relayed between the ASGI server and one worker.

The common case (body complete in the first ``http.request``, response complete in the
first pipe read) runs as straight-line code with no extra task. Otherwise a second task
streams the rest of the body to the worker and then watches for ``http.disconnect``,
while this one relays the worker's frames to ``send``; backpressure holds both ways
because neither side reads more than it has passed on.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

import anyio

from . import _protocol as proto
from ._errors import (
    AppLoadError,
    OverloadedError,
    PoolClosedError,
    ProtocolError,
    WorkerError,
    WorkerGoneError,
    WorkerTimeoutError,
)
from ._pool import KILL_GRACE, Pool
from ._process import WorkerProcess, describe_exit
from ._queue import Watch
from ._types import Message, Receive, Send

log = logging.getLogger("wsgipool.front")
#: Seconds a worker gets to stop a response after its client went away.
ABORT_GRACE = 5.0
#: How long the task-free fast path waits for the app's first frame; a slower app is
#: relayed by the slow path, which also notices a client that leaves meanwhile.
PATIENCE = 0.05
#: A first body chunk up to this size travels with the request (it fits an empty pipe);
#: a larger one is written by the inbound task while the response is read, so an app
#: that answers before reading its body cannot deadlock against the front.
INLINE_BODY = 32 * 1024
app_log = logging.getLogger("wsgipool.app")


def plain_response(status: int, text: str, *extra: tuple[bytes, bytes]) -> tuple[Message, Message]:
    """A short text/plain response as the two ASGI messages that send it."""
    body = text.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


class Exchange:
    """Relays one request; created per request by the front."""

    def __init__(self, pool: Pool, receive: Receive, send: Send, request_line: str) -> None:
        self.pool = pool
        self.receive = receive
        self.send = send
        self.request_line = request_line
        self.started = False  # http.response.start has gone to the server
        self.pending: Message | None = None  # a start message waiting for the first chunk
        self.disconnected = False
        self.too_large = False
        self.worker: WorkerProcess | None = None
        self._reading: anyio.CancelScope | None = None

    # -- responses of our own -------------------------------------------------------

    async def respond(self, status: int, text: str, *extra: tuple[bytes, bytes]) -> bool:
        """Answer with a short error response, if nothing was sent yet."""
        if self.started or self.disconnected:
            return False
        self.pending = None
        start, body = plain_response(status, text, *extra)
        self.started = True
        await self._send(start)
        await self._send(body)
        return True

    async def _send(self, message: Message) -> None:
        """Send to the server; the worker's deadline is paused meanwhile (a slow client
        is not the app's fault)."""
        worker = self.worker
        deadline = worker.deadline if worker is not None else None
        if worker is not None and deadline is not None:
            worker.deadline = None
        began = time.monotonic()
        try:
            await self.send(message)
        except OSError:  # some servers raise once the client is gone
            self.disconnected = True
        finally:
            if worker is not None and deadline is not None and worker.deadline is None:
                worker.deadline = deadline + time.monotonic() - began

    # -- dispatch -------------------------------------------------------------------

    async def run(self, cgi: dict[str, str], first: Message) -> None:
        body: bytes = first.get("body", b"")
        more: bool = first.get("more_body", False)
        limit = self.pool.config.max_body_size
        declared = cgi.get("CONTENT_LENGTH", "")
        if limit is not None and (
            len(body) > limit or (declared.isdigit() and int(declared) > limit)
        ):
            await self.respond(413, "Payload Too Large", (b"connection", b"close"))
            return
        payload: list[bytes | memoryview] = [proto.request_frame(cgi)]
        rest = b""
        if len(body) > INLINE_BODY:
            rest = body  # written by the inbound task, while the relay reads the response
        else:
            payload += proto.body_frames(body) if body else ()
            if not more:
                payload.append(proto.EOF_FRAME)
        worker = await self._dispatch(payload, watch=not more)
        if worker is not None:
            await self._serve(worker, more, len(body), rest)

    async def _dispatch(
        self, payload: list[bytes | memoryview], watch: bool
    ) -> WorkerProcess | None:
        """Hand the request to a worker; one that died before reading it is replaced once."""
        for attempt in (1, 2):
            worker = await self._acquire(self._client_gone if watch else None)
            if worker is None:
                return None
            timeout = self.pool.config.timeout
            worker.deadline = None if timeout is None else time.monotonic() + timeout
            self.worker = worker
            try:
                await worker.write(*payload)
                return worker
            except WorkerGoneError as exc:
                self.pool.discard(worker, "died while idle")
                if attempt == 2 or not exc.nothing_sent:
                    await self.respond(502, "Bad Gateway")
                    return None
            except BaseException:
                self.pool.release(worker, served=False)  # cancelled before the first byte
                raise
        return None

    async def _client_gone(self) -> None:
        """Return once the client disconnects (the body is complete: nothing else comes)."""
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.disconnected = True

    async def _acquire(self, watch: Watch | None) -> WorkerProcess | None:
        try:
            return await self.pool.acquire(watch)
        except (OverloadedError, PoolClosedError) as exc:
            log.warning("503 for %s: %s", self.request_line, exc)
            await self.respond(503, "Service Unavailable", (b"retry-after", b"1"))
        except AppLoadError as exc:
            log.error("500 for %s: the app could not be loaded: %s", self.request_line, exc)
            await self.respond(500, "Internal Server Error")
        except (WorkerError, OSError, TimeoutError) as exc:
            log.error("502 for %s: no worker could be started: %s", self.request_line, exc)
            await self.respond(502, "Bad Gateway")
        return None

    async def _serve(self, worker: WorkerProcess, more: bool, received: int, rest: bytes) -> None:
        try:
            if more or rest or not await self._relay(worker, once=True):
                await self._stream(worker, more, received, rest)
        except WorkerError as exc:
            if worker.timed_out and not isinstance(exc, WorkerTimeoutError):
                exc = WorkerTimeoutError(self._late(worker))  # the watchdog killed it
            await self._fail(worker, exc)
        except BaseException:
            worker.signal_group(signal.SIGKILL)  # cancelled mid-request: state unknown
            self.pool.discard(worker, "cancelled")
            raise
        else:
            self.pool.release(worker)

    async def _stream(self, worker: WorkerProcess, more: bool, received: int, rest: bytes) -> None:
        error: WorkerError | None = None
        lock = anyio.Lock()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._inbound, worker, lock, more, received, rest)
            try:
                await self._relay(worker, once=False)
            except WorkerError as exc:
                error = exc
                await self._kill(worker, exc)  # unblocks the inbound task's writes
            tg.cancel_scope.cancel()
        if error is not None:
            raise error

    # -- worker -> client -----------------------------------------------------------

    async def _read(
        self, worker: WorkerProcess, patience: float | None = None
    ) -> list[proto.Frame] | None:
        """The next frames (None if ``patience`` ran out first). Deadlines: the supervisor's
        watchdog kills a late worker; a pool without one bounds each read itself."""
        if self.pool.supervised:
            return await (worker.read() if patience is None else worker.read_within(patience))
        with anyio.CancelScope() as scope:  # a client that leaves sets a deadline here too
            if worker.deadline is not None:
                scope.deadline = anyio.current_time() + worker.deadline - time.monotonic()
            self._reading = scope
            try:
                if patience is None:
                    return await worker.read()
                return await worker.read_within(patience)
            finally:
                self._reading = None
        worker.timed_out = True
        raise WorkerTimeoutError(self._late(worker))

    def _late(self, worker: WorkerProcess) -> str:
        if self.disconnected:
            return f"did not stop within {ABORT_GRACE}s of the client leaving"
        return f"no response within {self.pool.config.timeout}s"

    def _client_left(self) -> None:
        """The client is gone: the worker gets ABORT_GRACE seconds to stop."""
        self.disconnected = True
        worker = self.worker
        if worker is not None:
            grace = time.monotonic() + ABORT_GRACE
            worker.deadline = grace if worker.deadline is None else min(worker.deadline, grace)
        if self._reading is not None:
            self._reading.deadline = min(self._reading.deadline, anyio.current_time() + ABORT_GRACE)

    async def _relay(self, worker: WorkerProcess, once: bool) -> bool:
        """Pass frames on until END; True when done. With ``once``, stop after one read,
        and give up (False) if the app is slow to answer: the slow path then also watches
        for the client leaving."""
        while True:
            frames = await self._read(worker, PATIENCE if once else None)
            if frames is None:
                return False
            for frame in frames:
                kind = frame[0]
                if kind == proto.BODY:
                    await self._body(frame)
                elif kind == proto.START:
                    self.pending = self._start_message(frame)
                elif kind == proto.END:
                    await self._end()
                    return True
                elif kind == proto.ERROR:
                    app_log.error("%s", frame[1])
                    if self.too_large:
                        await self.respond(413, "Payload Too Large", (b"connection", b"close"))
                    elif not await self.respond(500, "Internal Server Error"):
                        log.error("response to %s cut off: the app failed", self.request_line)
                    return True
                elif kind == proto.LOG:
                    app_log.log(frame[1], "%s", frame[2])
                else:
                    raise ProtocolError(f"unexpected frame {kind} from worker {worker.id}")
            if once:
                return False

    @staticmethod
    def _start_message(frame: proto.Frame) -> Message:
        try:
            _, status, raw = frame
            headers = [(bytes(name), bytes(value)) for name, value in raw]
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed START frame: {frame!r:.200}") from exc
        if type(status) is not int or not 100 <= status <= 999:
            raise ProtocolError(f"bad status in START frame: {status!r}")
        return {"type": "http.response.start", "status": status, "headers": headers}

    async def _body(self, frame: proto.Frame) -> None:
        if self.disconnected or self.too_large:
            return
        if self.pending is not None:
            self.started = True
            start, self.pending = self.pending, None
            await self._send(start)
        await self._send({"type": "http.response.body", "body": frame[1], "more_body": True})

    async def _end(self) -> None:
        if self.too_large:
            await self.respond(413, "Payload Too Large", (b"connection", b"close"))
            return
        if self.disconnected:
            return
        if self.pending is not None:
            self.started = True
            start, self.pending = self.pending, None
            await self._send(start)
        if not self.started:
            raise ProtocolError("worker ended a response it never started")
        await self._send({"type": "http.response.body"})

    # -- client -> worker -----------------------------------------------------------

    async def _inbound(
        self, worker: WorkerProcess, lock: anyio.Lock, more: bool, size: int, rest: bytes
    ) -> None:
        """Stream the rest of the body, then wait for the client to go away."""
        limit = self.pool.config.max_body_size
        try:
            if rest:
                first: list[Any] = proto.body_frames(rest)
                if not more:
                    first.append(proto.EOF_FRAME)
                async with lock:
                    await worker.write(*first)
            while more:
                message = await self.receive()
                if message["type"] == "http.disconnect":
                    break
                chunk: bytes = message.get("body", b"")
                more = message.get("more_body", False)
                size += len(chunk)
                if limit is not None and size > limit:
                    self.too_large = True
                    break
                pieces = proto.body_frames(chunk) if chunk else []
                if not more:
                    pieces.append(proto.EOF_FRAME)
                async with lock:
                    await worker.write(*pieces)
            else:
                message = await self.receive()  # returns only once the client has gone
            if message["type"] == "http.disconnect":
                self._client_left()
            async with lock:
                await worker.write(proto.ABORT_FRAME)
        except WorkerError:
            pass  # the relay sees the same failure on its side

    # -- failures -------------------------------------------------------------------

    async def _kill(self, worker: WorkerProcess, exc: WorkerError) -> None:
        if not worker.alive():
            return
        if isinstance(exc, WorkerTimeoutError):
            worker.signal_group(signal.SIGTERM)
            if await worker.wait(KILL_GRACE) is not None:
                return
        worker.signal_group(signal.SIGKILL)
        await worker.wait(1.0)

    async def _fail(self, worker: WorkerProcess, exc: WorkerError) -> None:
        if isinstance(exc, WorkerTimeoutError) and self.disconnected:
            status, text, reason = 504, "Gateway Timeout", "stuck after disconnect"
        elif isinstance(exc, WorkerTimeoutError):
            status, text, reason = 504, "Gateway Timeout", "timeout"
        elif isinstance(exc, WorkerGoneError):
            status, text, reason = 502, "Bad Gateway", "crashed"
        else:
            status, text, reason = 502, "Bad Gateway", "protocol error"
        answered = False
        try:
            answered = await self.respond(status, text)
        finally:
            with anyio.CancelScope(shield=True):
                await self._kill(worker, exc)
            self.pool.discard(worker, reason)
        log.error(
            "worker %d (pid %d) %s during %s (%s); %s",
            worker.id,
            worker.pid,
            reason,
            self.request_line,
            describe_exit(worker.popen.poll()),
            f"answered {status}" if answered else "response cut off",
        )
