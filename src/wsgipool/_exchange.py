"""One HTTP request relayed between the ASGI server and one worker.

The exchange holds a :class:`~wsgipool._lease.Lease` on its worker and talks to the
worker only through it. The common case (body complete in the first ``http.request``,
response complete in the first pipe read) runs as straight-line code with no extra task.
Otherwise a second task streams the rest of the body to the worker and then watches for
``http.disconnect``, while this one relays the worker's frames to ``send``; backpressure
holds both ways because neither side reads more than it has passed on.
"""

from __future__ import annotations

import logging

import anyio

from . import _protocol as proto
from ._errors import (
    AppLoadError,
    OverloadedError,
    PoolClosedError,
    ProtocolError,
    RequestNotSentError,
    WorkerError,
    WorkerGoneError,
    WorkerStartError,
    WorkerTimeoutError,
)
from ._lease import Lease
from ._pool import Pool
from ._queue import Watch
from ._types import Message, Receive, Send

log = logging.getLogger("wsgipool.front")
app_log = logging.getLogger("wsgipool.app")
#: How long the task-free fast path waits for the app's first frame; a slower app is
#: relayed by the slow path, which also notices a client that leaves meanwhile.
PATIENCE = 0.05
#: A first body chunk up to this size travels with the request (it fits an empty pipe);
#: a larger one is written by the inbound task while the response is read, so an app
#: that answers before reading its body cannot deadlock against the front.
INLINE_BODY = 32 * 1024


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
        self.lease: Lease | None = None

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
        """Send to the server; the lease's deadline is paused meanwhile (a slow client
        is not the app's fault)."""
        lease = self.lease
        if lease is None:
            await self._send_now(message)
            return
        lease.pause()
        try:
            await self._send_now(message)
        finally:
            lease.resume()

    async def _send_now(self, message: Message) -> None:
        try:
            await self.send(message)
        except OSError:  # some servers raise once the client is gone
            self.disconnected = True

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
        lease = await self._dispatch(payload, watch=not more)
        if lease is not None:
            await self._serve(lease, more, len(body), rest)

    async def _dispatch(self, payload: list[bytes | memoryview], watch: bool) -> Lease | None:
        """Hand the request to a worker; one that was gone before it read a byte of it is
        replaced, as often as the pool may have workers."""
        for _ in range(self.pool.limit + 1):
            lease = await self._acquire(self._client_gone if watch else None)
            if lease is None:
                return None
            self.lease = lease
            try:
                await lease.send(*payload)
                return lease
            except RequestNotSentError:
                lease.discard("died while idle")
            except WorkerGoneError:
                lease.discard("died while idle")
                break
            except BaseException:
                lease.give_back()  # cancelled before the first byte
                raise
        self.lease = None
        await self.respond(502, "Bad Gateway")
        return None

    async def _client_gone(self) -> None:
        """Return once the client disconnects (the body is complete: nothing else comes)."""
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.disconnected = True

    async def _acquire(self, watch: Watch | None) -> Lease | None:
        try:
            return await self.pool.acquire(watch)
        except (OverloadedError, PoolClosedError) as exc:
            log.warning("503 for %s: %s", self.request_line, exc)
            await self.respond(503, "Service Unavailable", (b"retry-after", b"1"))
        except AppLoadError as exc:
            log.error("500 for %s: the app could not be loaded: %s", self.request_line, exc)
            await self.respond(500, "Internal Server Error")
        except WorkerStartError as exc:
            log.error("502 for %s: no worker could be started: %s", self.request_line, exc)
            await self.respond(502, "Bad Gateway")
        return None

    async def _serve(self, lease: Lease, more: bool, received: int, rest: bytes) -> None:
        try:
            if more or rest or not await self._relay(lease, once=True):
                await self._stream(lease, more, received, rest)
        except WorkerError as exc:
            await self._fail(lease, exc)
        except BaseException:
            lease.discard("cancelled")  # cancelled mid-request: state unknown
            raise
        else:
            lease.release()

    async def _stream(self, lease: Lease, more: bool, received: int, rest: bytes) -> None:
        error: WorkerError | None = None
        lock = anyio.Lock()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._inbound, lease, lock, more, received, rest)
            try:
                await self._relay(lease, once=False)
            except WorkerError as exc:
                error = exc
                await lease.kill()  # unblocks the inbound task's writes
            tg.cancel_scope.cancel()
        if error is not None:
            raise error

    # -- worker -> client -----------------------------------------------------------

    async def _relay(self, lease: Lease, once: bool) -> bool:
        """Pass frames on until END; True when done. With ``once``, stop after one read,
        and give up (False) if the app is slow to answer: the slow path then also watches
        for the client leaving."""
        while True:
            frames = await lease.read(PATIENCE if once else None)
            if frames is None:
                return False
            for frame in frames:
                kind = type(frame)
                if kind is proto.Body:
                    await self._body(frame.data)  # type: ignore[union-attr]
                elif kind is proto.Start:
                    self.pending = {
                        "type": "http.response.start",
                        "status": frame.status,  # type: ignore[union-attr]
                        "headers": frame.headers,  # type: ignore[union-attr]
                    }
                elif kind is proto.End:
                    await self._end()
                    return True
                elif kind is proto.Error:
                    await self._app_failed(frame.message)  # type: ignore[union-attr]
                    return True
                elif kind is proto.Log:
                    app_log.log(frame.level, "%s", frame.message)  # type: ignore[union-attr]
                else:
                    raise ProtocolError(f"unexpected {kind.__name__} frame from a worker")
            if once:
                return False

    async def _app_failed(self, message: str) -> None:
        app_log.error("%s", message)
        if self.too_large:
            await self.respond(413, "Payload Too Large", (b"connection", b"close"))
        elif not await self.respond(500, "Internal Server Error"):
            log.error("response to %s cut off: the app failed", self.request_line)

    async def _start_now(self) -> None:
        if self.pending is not None:
            self.started = True
            start, self.pending = self.pending, None
            await self._send(start)

    async def _body(self, data: bytes) -> None:
        if self.disconnected or self.too_large:
            return
        await self._start_now()
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def _end(self) -> None:
        if self.too_large:
            await self.respond(413, "Payload Too Large", (b"connection", b"close"))
            return
        if self.disconnected:
            return
        await self._start_now()
        if not self.started:
            raise ProtocolError("worker ended a response it never started")
        await self._send({"type": "http.response.body"})

    # -- client -> worker -----------------------------------------------------------

    async def _inbound(
        self, lease: Lease, lock: anyio.Lock, more: bool, size: int, rest: bytes
    ) -> None:
        """Stream the rest of the body, then wait for the client to go away."""
        limit = self.pool.config.max_body_size
        try:
            if rest:
                first = proto.body_frames(rest)
                if not more:
                    first.append(proto.EOF_FRAME)
                async with lock:
                    await lease.send(*first)
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
                    await lease.send(*pieces)
            else:
                message = await self.receive()  # returns only once the client has gone
            if message["type"] == "http.disconnect":
                self.disconnected = True
                lease.client_left(self.pool.config.abort_grace)
            async with lock:
                await lease.send(proto.ABORT_FRAME)
        except WorkerError:
            pass  # the relay sees the same failure on its side

    # -- failures -------------------------------------------------------------------

    async def _fail(self, lease: Lease, exc: WorkerError) -> None:
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
            await lease.kill()
            lease.discard(reason)
        worker = lease.worker
        log.error(
            "worker %d (pid %d) %s during %s (%s); %s",
            worker.id,
            worker.pid,
            reason if not isinstance(exc, ProtocolError) else f"{reason}: {exc}",
            self.request_line,
            worker.exit_status(),
            f"answered {status}" if answered else "response cut off",
        )
