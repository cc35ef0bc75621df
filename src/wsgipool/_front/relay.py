"""The response of one request: the worker's frames in, the client's messages out.

Frames become ASGI messages in a queue as fast as the worker writes them; the worker is
released as soon as the response is complete, and the queue is sent at the client's
pace. Small responses (complete in the first pipe read) are queued, released and sent
with no task at all. Others run three ways at once: a *pump* (worker -> queue, body
chunks held in a :class:`~wsgipool._front.spool.Spool` up to ``max_response_buffer``, then the
worker waits), a *drain* (queue -> client, cut off when the client is slower than
:class:`~wsgipool._front.intake.Pace` allows) and a *feed* (the request body -> worker, then
a watch for the client leaving, which tells the app to stop).
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from typing import TYPE_CHECKING, Any

import anyio

from .._errors import (
    LeaseEndedError,
    ProtocolError,
    WorkerError,
    WorkerGoneError,
    WorkerTimeoutError,
)
from .._pool.lease import Lease
from .._types import Message
from .._wire import frames as proto
from .._wire import remote as remote
from .guard import PHRASES
from .intake import BodyRefused, Pace, check_size
from .linger import drain_body, linger_time
from .spool import Spool, SpoolError

if TYPE_CHECKING:
    from .exchange import Exchange

log = logging.getLogger("wsgipool.front")
app_log = logging.getLogger("wsgipool.app")
#: How long the task-free fast path waits for the app's first frame; a slower app is
#: relayed by the streamed path, which also notices a client that leaves meanwhile.
PATIENCE = 0.05
END_MESSAGE: dict[str, Any] = {"type": "http.response.body"}
DISCONNECT = "http.disconnect"
BODY = "http.response.body"
CLOSE = (b"connection", b"close")
#: Largest message made of queued chunks joined together: a slow client holds at most
#: this much in the server's own write buffer.
COALESCE = 256 * 1024
#: ... and only when the front is this far behind: small responses keep their chunks.
COALESCE_BEHIND = 64 * 1024
#: Largest message for a client whose response has gone to disk (see Relay._next).
SLOW_MESSAGE = 64 * 1024
#: A queued body chunk: the message is built from the spool's next chunk when sent.
CHUNK = None
Item = Message | None


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


def shared_path(fd: int) -> str:
    """The path by which a worker opens the front's descriptor ``fd`` itself."""
    return f"/proc/{os.getpid()}/fd/{fd}"


class Relay:
    """Relays one response; the exchange's lease is handed over to it."""

    def __init__(self, exchange: Exchange, lease: Lease) -> None:
        self.x = exchange
        self.lease = lease
        self.pending: Message | None = None  # a start message, until its first chunk
        self.committed = False  # a start message is queued: our own errors are too late
        self.items: deque[Item] = deque()
        self.spool: Spool | None = None  # body chunks of the streamed path
        self._wake: anyio.Event | None = None  # the drain waits for items
        self._room: anyio.Event | None = None  # the pump waits for the spool to shrink
        self._done = False  # the pump has queued the response's last item
        self._lock: anyio.Lock | None = None  # streamed: writes and the release take turns
        self._fed = False  # the request body and its EOF are in the worker's pipe
        self._drained: anyio.Event | None = None  # set once a refused body was drained
        self._spill = False  # the worker was asked to write into the spool's spill file
        self._held = 0  # bytes of the last message sent, counted in the memory budget
        self._sending = 0  # ... of the message being sent, likewise

    async def run(self, more: bool, received: int, body: Spool | None) -> None:
        """Relay the response; every way out ends the lease."""
        try:
            # No name holds the first read's frames: their chunks may be held a long time
            # by a slow client, and only the spool's (counted, bounded) copy must do that.
            if body is None and not more and self.take(await self.lease.read(PATIENCE) or []):
                self.lease.release()  # free before the client has a byte
                await self._send_queued()
                return
            await self._stream(more, received, body)
        except WorkerError as exc:
            await self._fail(exc)
            await self._send_queued()
        except BaseException:
            self.lease.discard("cancelled")  # cancelled mid-request: state unknown
            raise

    # -- frames -> queue ------------------------------------------------------------

    def take(self, frames: list[proto.Frame]) -> bool:
        """Queue what ``frames`` say; True once the response is complete."""
        for frame in frames:
            kind = type(frame)
            if kind is proto.Body:
                self._chunk(frame.data)  # type: ignore[union-attr]
            elif kind is proto.Spilled:
                self._adopt(frame.size)  # type: ignore[union-attr]
            elif kind is proto.Start:
                self.pending = {
                    "type": "http.response.start",
                    "status": frame.status,  # type: ignore[union-attr]
                    "headers": frame.headers,  # type: ignore[union-attr]
                }
            elif kind is proto.End:
                self._end()
                return True
            elif kind is proto.Error:
                self._app_failed(frame)  # type: ignore[arg-type]
                return True
            elif kind is proto.Log:
                app_log.log(frame.level, "%s", frame.message)  # type: ignore[union-attr]
            else:
                raise ProtocolError(f"unexpected {kind.__name__} frame from a worker")
        return False

    def _commit(self) -> None:
        if self.pending is not None:
            self.items.append(self.pending)
            self.pending = None
            self.committed = True

    def _chunk(self, data: bytes) -> None:
        if self.x.disconnected or self.x.refused:
            return
        self._commit()
        if self.spool is None:
            self.items.append({"type": "http.response.body", "body": data, "more_body": True})
            return
        try:
            self.spool.put(data)
        except SpoolError as exc:  # the response cannot be held: give up on the client
            self._cut_off(exc)
            return
        self.items.append(CHUNK)

    def _spool_queued(self) -> None:
        """Body chunks queued by the first read (up to a pipe's worth) move into the
        spool, where the memory budget counts them, before the response is streamed."""
        queued, self.items = self.items, deque()
        for item in queued:
            if item is not CHUNK and item.get("more_body") and item["type"] == BODY:
                self._chunk(item["body"])
            else:
                self.items.append(item)

    def _cut_off(self, exc: SpoolError) -> None:
        log.error("response to %s cut off: %s", self.x.request_line, exc)
        self.x.disconnected = True

    def _adopt(self, size: int) -> None:
        if not self._spill or self.spool is None:
            raise ProtocolError("SPILLED frame from a worker that was not asked to spill")
        if self.x.disconnected or self.x.refused:
            return
        self._commit()
        items = self.items
        if not self.spool.adopt(size, merge=bool(items) and items[-1] is CHUNK):
            items.append(CHUNK)

    def _end(self) -> None:
        if self.x.refused:
            self._own(self.x.refused, PHRASES[self.x.refused])
            return
        self._commit()
        if not self.committed:
            raise ProtocolError("worker ended a response it never started")
        self.items.append(END_MESSAGE)

    def _own(self, status: int, text: str) -> None:
        """Queue a response of our own, unless the app's has begun. The answer to a body
        the front refused is ended only once the feed has drained that body (_linger)."""
        if self.committed:
            return
        self.committed = True
        if self._drained is None:
            self.items.extend(plain_response(status, text))
            return
        start, body = plain_response(status, text, CLOSE)
        self.items.extend((start, {**body, "more_body": True}, END_MESSAGE))

    def _app_failed(self, frame: proto.Error) -> None:
        if self.x.refused:
            self._own(self.x.refused, PHRASES[self.x.refused])
        elif self.x.config.app_errors == "raise":  # the server answers 500, as with asgiref
            self.x.failure = remote.load(frame.message, frame.pickled, self._shares_files())
        else:
            app_log.error("%s", frame.message)
            if self.committed:
                log.error("response to %s cut off: the app failed", self.x.request_line)
            self._own(500, "Internal Server Error")

    # -- queue -> client ------------------------------------------------------------

    async def _send_queued(self) -> None:
        while self.items:
            await self.x.deliver(self._next())
            self._sent()

    def _next(self) -> Message:
        """The next message. Chunks already queued behind a chunk (the client or the
        front fell behind) go out as one message of up to ``COALESCE`` bytes: one send
        instead of many; a client that keeps up still gets one message per chunk.

        A message sent may wait in the server's write buffer for as long as the client
        takes to read it, beyond our spool. So a message larger than ``SLOW_MESSAGE`` is
        counted in the memory budget until the next one has been sent (the server then
        has written it, as it takes a message only once its buffer drained), made only while
        the budget has room and the spool is not on disk; otherwise messages are
        ``SLOW_MESSAGE`` bytes at most, chunks split to fit. Many slow readers then
        hold little beyond the budget, however large the app's chunks."""
        item = self.items.popleft()
        if item is not CHUNK:
            return item
        spool, items, budget = self.spool, self.items, self.x.budget
        assert spool is not None
        roomy = not spool.on_disk and budget.take(COALESCE)
        limit = None if roomy else SLOW_MESSAGE
        data = self._take(spool, limit)
        if items and items[0] is CHUNK and spool.size >= COALESCE_BEHIND:
            most = COALESCE if roomy else SLOW_MESSAGE
            parts, size = [data], len(data)
            while items and items[0] is CHUNK and size < most:
                items.popleft()
                part = self._take(spool, None if roomy else most - size)
                parts.append(part)
                size += len(part)
            data = b"".join(parts)
        if roomy:
            budget.give(COALESCE - len(data))  # what was set aside, less what it holds
            self._sending = len(data)
        if self._room is not None:
            self._room.set()
        return {"type": "http.response.body", "body": data, "more_body": True}

    def _sent(self) -> None:
        """A message was taken by the server: the one before it has left its buffer."""
        self.x.budget.give(self._held)
        self._held, self._sending = self._sending, 0

    def _take(self, spool: Spool, limit: int | None) -> bytes:
        """The spool's next chunk, or ``limit`` bytes of it (the rest keeps its place)."""
        data = spool.get(limit)
        assert data is not None
        if spool.split:
            self.items.appendleft(CHUNK)
        return data

    async def _drain(self) -> None:
        """Send the queue at the client's pace until the response's end; cut a client
        slower than Pace allows (one cancel scope, its deadline moved per send)."""
        pace = Pace(self.x.config)
        with anyio.CancelScope() as scope:
            while not self.x.disconnected:
                if not self.items:
                    if self._done:
                        return
                    scope.deadline = math.inf  # waiting on the app, not on the client
                    self._wake = anyio.Event()
                    await self._wake.wait()
                    continue
                try:
                    message = self._next()
                except SpoolError as exc:  # the rest cannot be read back: cut the client off
                    self._cut_off(exc)
                    return
                if message is END_MESSAGE and self._drained is not None:
                    scope.deadline = math.inf  # the feed's bounds apply (_linger)
                    await self._drained.wait()
                scope.deadline = anyio.current_time() + max(pace.begin(), 0)
                await self.x.deliver(message)
                self._sent()
                pace.end(len(message.get("body", b"")))
        if scope.cancelled_caught:
            self.x.disconnected = True
            detail = f"the client reads too slowly ({self.x.request_line}: {pace.why()})"
            self.x.refusals.closed("slow reader", detail, self.x.client)

    def _queued(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # -- worker -> queue ------------------------------------------------------------

    async def _stream(self, more: bool, received: int, body: Spool | None) -> None:
        x = self.x
        self.spool = Spool(x.budget, x.config.buffer_dir)
        lock = self._lock = anyio.Lock()
        try:
            self._spool_queued()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._feed, lock, more, received, body)
                pumped = anyio.Event()
                tg.start_soon(self._pump, pumped)
                await self._drain()
                if self._room is not None:
                    self._room.set()  # the pump may be waiting for a client that left
                if not self._done:  # the client is gone or too slow: the app must stop
                    await self._client_left(lock)
                await pumped.wait()
                tg.cancel_scope.cancel()
        finally:
            self.spool.close()
            self.x.budget.give(self._held + self._sending)
            self._held = self._sending = 0

    async def _pump(self, pumped: anyio.Event) -> None:
        cap = self.x.config.max_response_buffer or 0
        assert self.spool is not None
        try:
            while True:
                frames = await self.lease.read()
                assert frames is not None
                done = self.take(frames)
                del frames  # not held while the pump waits for the client below
                self._queued()
                if not done and not self._spill and self.spool.on_disk:
                    self._ask_to_spill(cap)
                if done:
                    # Not while the feed is mid-write: the worker's next request must
                    # not get the rest of this one's body (later writes are refused).
                    assert self._lock is not None
                    async with self._lock:
                        self.lease.release()
                    break
                while self.spool.size > cap and not self.x.disconnected:
                    self._room = anyio.Event()  # the client has to catch up first
                    self.lease.pause()
                    try:
                        await self._room.wait()
                    finally:
                        self.lease.resume()
        except WorkerError as exc:
            await self._fail(exc)
        finally:
            self._done = True
            self._queued()
            pumped.set()

    def _ask_to_spill(self, cap: int) -> None:
        """The client is far enough behind that the spool went to disk: ask the worker to
        write the rest into a file of the spool's itself (one copy, in the worker, instead
        of two in the front). Only a worker that runs as the front's user can open the
        file; only once nothing else writes to its pipe; never waiting for room in it."""
        assert self.spool is not None
        assert self._lock is not None
        if not self._shares_files() or not self._fed or self._lock.locked():
            return
        if cap <= self.spool.size:  # no room left to offer
            return
        try:
            fd = self.spool.spill_file()
        except SpoolError:
            self._spill = True  # no file to offer: the front goes on writing its own
            return
        frame = proto.spill_frame(shared_path(fd), cap - self.spool.size)
        self._spill = self.lease.try_send(frame)

    def _shares_files(self) -> bool:
        """May the worker open the front's descriptors? (It runs as the front's user.)"""
        return self.x.pool.launcher.identity is None

    # -- client -> worker -----------------------------------------------------------

    async def _feed(self, lock: anyio.Lock, more: bool, size: int, body: Spool | None) -> None:
        """Send the rest of the body, then wait for the client to go away."""
        x = self.x
        try:
            if body is not None:
                await self._send_body(lock, body)
                if not more:
                    async with lock:
                        await self.lease.send(proto.EOF_FRAME)
            self._fed = not more
            gone = await self._stream_body(lock, size) if more else False
            if not x.refused:
                # receive() returns only once the client has gone, on most servers
                if not gone and (await x.receive())["type"] != DISCONNECT:
                    return  # a receive that does not wait for the disconnect: nothing to watch
                x.disconnected = True
                self._queued()
            await self._client_left(lock)
            if self._drained is not None:  # the app is told to stop; the client still sends
                try:
                    await drain_body(x.receive, linger_time(x.refused))
                finally:
                    self._drained.set()
        except LeaseEndedError:
            pass  # the response ended first: the app did not need the rest
        except WorkerError as exc:
            # The body cannot reach the worker, which would wait for it until its timeout:
            # stop it now, and the pump answers for the request.
            if not self.lease.ended:
                log.error("request body of %s not delivered: %s", x.request_line, exc)
                await self.lease.kill()
        except SpoolError as exc:  # the buffered body cannot be read back: stop the app
            log.error("request body of %s lost: %s", x.request_line, exc)
            x.disconnected = True
            self._queued()
            await self._client_left(lock)

    async def _stream_body(self, lock: anyio.Lock, size: int) -> bool:
        """The rest of a body that is not buffered, to the worker as it comes, at a pace
        the client must keep as for a buffered one; True if the client left meanwhile.
        The front may refuse the rest (``x.refused``: 413 past ``max_body_size``, 408 for
        a client slower than :class:`Pace` allows); the app is then told to stop."""
        x, limit = self.x, self.x.config.max_body_size
        pace = x.pace or Pace(x.config)  # counted from the body's first message
        with anyio.CancelScope() as scope:  # its deadline moved per message
            while True:
                scope.deadline = anyio.current_time() + max(pace.begin(), 0)
                message = await x.receive()
                chunk = message.get("body", b"")
                pace.end(len(chunk))
                if message["type"] == DISCONNECT:
                    return True
                more = message.get("more_body", False)
                size += len(chunk)
                try:
                    check_size(size, limit)
                except BodyRefused as exc:
                    self._refuse(exc)
                    return False
                pieces = proto.body_frames(chunk) if chunk else []
                if not more:
                    pieces.append(proto.EOF_FRAME)
                scope.deadline = math.inf  # the worker's pace now, not the client's
                async with lock:
                    await self.lease.send(*pieces)
                self._fed = not more
                if not more:
                    return False
        self._refuse(BodyRefused(408, "body too slow", pace.why()))
        return False

    def _refuse(self, exc: BodyRefused) -> None:
        self.x.refused = exc.status
        self.x.count_refusal(exc)
        self._drained = anyio.Event()

    async def _send_body(self, lock: anyio.Lock, body: Spool) -> None:
        """A buffered body: what is in memory over the pipe; what is on disk, by naming
        the spool file, which the worker reads itself (no copy through the front) when it
        runs as the front's user and may open the front's descriptors."""
        if self._shares_files():
            chunks, region = body.hand_over()
            # At most 1 MiB in memory, often in many small pieces: one frame of it.
            pieces = proto.body_frames(b"".join(chunks)) if chunks else []
            if region is not None:
                fd, offset, size = region
                pieces.append(proto.file_frame(shared_path(fd), offset, size))
            async with lock:
                await self.lease.send(*pieces)
            return
        while (chunk := body.get()) is not None:
            async with lock:
                await self.lease.send(*proto.body_frames(chunk))

    async def _client_left(self, lock: anyio.Lock) -> None:
        """Tell the app to stop; it has ``abort_grace`` seconds before it is killed."""
        try:
            async with lock:
                if self.lease.ended:
                    return
                if self.x.disconnected:
                    self.lease.client_left(self.x.config.abort_grace)
                await self.lease.send(proto.ABORT_FRAME)
        except WorkerError:
            pass

    # -- failures -------------------------------------------------------------------

    async def _fail(self, exc: WorkerError) -> None:
        lease, x = self.lease, self.x
        if isinstance(exc, WorkerTimeoutError) and x.disconnected:
            status, text, reason = 504, "Gateway Timeout", "stuck after disconnect"
        elif isinstance(exc, WorkerTimeoutError):
            status, text, reason = 504, "Gateway Timeout", "timeout"
        elif isinstance(exc, WorkerGoneError):
            status, text, reason = 502, "Bad Gateway", "crashed"
        else:
            status, text, reason = 502, "Bad Gateway", "protocol error"
        await lease.kill()
        lease.discard(reason)
        answered = not self.committed and not x.disconnected
        if answered:
            self.items.clear()
            self._own(status, text)
        elif x.config.app_errors == "raise" and not x.disconnected:
            x.failure = exc  # the response is cut off: say so to the caller
        worker = lease.worker
        log.error(
            "worker %d (pid %d) %s during %s (%s); %s",
            worker.id,
            worker.pid,
            reason if not isinstance(exc, ProtocolError) else f"{reason}: {exc}",
            x.request_line,
            worker.exit_status(),
            f"answered {status}" if answered else "response cut off",
        )
