"""The response of one request: the worker's frames in, the client's messages out.

Frames become ASGI messages in a :class:`~wsgipool._front.response.Response` queue as
fast as the worker writes them; the worker is released as soon as the response is
complete, and the queue is sent at the client's pace. Small responses (complete in the
first pipe read) are queued, released and sent with no task at all. Others run three
ways at once: a *pump* (worker -> queue, body chunks held in a spool up to
``max_response_buffer``, then the worker waits), a *drain* (queue -> client, cut off
when the client is slower than :class:`~wsgipool._front.intake.Pace` allows) and a
*feed* (the request body -> worker, then a watch for the client leaving, which tells
the app to stop).
"""

from __future__ import annotations

import logging
import math
import os
from typing import Protocol

import anyio

from .._errors import (
    LeaseEndedError,
    ProtocolError,
    WorkerError,
    WorkerGoneError,
    WorkerTimeoutError,
)
from .._pool.lease import Lease
from .._types import Message, Receive
from .._wire import frames as proto
from .guard import PHRASES, Refusals
from .intake import BodyRefused, Pace, check_size
from .linger import drain_body, linger_time
from .response import END_MESSAGE, ClientSide, Response
from .spool import Spool, SpoolError

log = logging.getLogger("wsgipool.front")
#: How long the task-free fast path waits for the app's first frame; a slower app is
#: relayed by the streamed path, which also notices a client that leaves meanwhile.
PATIENCE = 0.05
DISCONNECT = "http.disconnect"


def shared_path(fd: int) -> str:
    """The path by which a worker opens the front's descriptor ``fd`` itself."""
    return f"/proc/{os.getpid()}/fd/{fd}"


class RequestSide(ClientSide, Protocol):
    """What the relay needs of its request's client side, beyond what the response does
    (the exchange has it; this room's exchange module imports this one, not back)."""

    refusals: Refusals
    client: object
    receive: Receive
    pace: Pace | None

    async def deliver(self, message: Message) -> None: ...

    def count_refusal(self, exc: BodyRefused) -> None: ...


class Relay:
    """Relays one response; the exchange's lease is handed over to it."""

    def __init__(self, exchange: RequestSide, lease: Lease) -> None:
        self.exchange = exchange
        self.lease = lease
        self.r = Response(exchange)
        self._lock: anyio.Lock | None = None  # streamed: writes and the release take turns
        self._fed = False  # the request body and its EOF are in the worker's pipe

    async def run(self, more: bool, received: int, body: Spool | None) -> None:
        """Relay the response; every way out ends the lease."""
        try:
            # No name holds the first read's frames: their chunks may be held a long time
            # by a slow client, and only the spool's (counted, bounded) copy must do that.
            if body is None and not more and self.r.take(await self.lease.read(PATIENCE) or []):
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

    # -- queue -> client ------------------------------------------------------------

    async def _send_queued(self) -> None:
        while self.r.items:
            await self.exchange.deliver(self.r.next())
            self.r.sent()

    async def _drain(self) -> None:
        """Send the queue at the client's pace until the response's end; cut a client
        slower than Pace allows (one cancel scope, its deadline moved per send)."""
        pace = Pace(self.exchange.config)
        with anyio.CancelScope() as scope:
            self.r.drain_scope = scope
            while not self.exchange.disconnected:
                if not self.r.items:
                    if self.r.done:
                        return
                    scope.deadline = math.inf  # waiting on the app, not on the client
                    await self.r.wait_for_items()
                    continue
                try:
                    message = self.r.next()
                except SpoolError as exc:  # the rest cannot be read back: cut the client off
                    self.r.cut_off(exc)
                    return
                if message is END_MESSAGE and self.r.drained is not None:
                    scope.deadline = math.inf  # the feed's bounds apply (_linger)
                    await self.r.drained.wait()
                scope.deadline = anyio.current_time() + max(pace.begin(), 0)
                await self.exchange.deliver(message)
                self.r.sent()
                pace.end(len(message.get("body", b"")))
        if scope.cancelled_caught and not self.r.shed_for_disk:
            self.exchange.disconnected = True
            detail = f"the client reads too slowly ({self.exchange.request_line}: {pace.why()})"
            self.exchange.refusals.closed("slow reader", detail, self.exchange.client)

    # -- worker -> queue ------------------------------------------------------------

    async def _stream(self, more: bool, received: int, body: Spool | None) -> None:
        lock = self._lock = anyio.Lock()
        try:
            spool = self.r.stream()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._feed, lock, more, received, body)
                pumped = anyio.Event()
                tg.start_soon(self._pump, spool, pumped)
                await self._drain()
                self.r.make_room()  # the pump may be waiting for a client that left
                if not self.r.done:  # the client is gone or too slow: the app must stop
                    await self._client_left(lock)
                await pumped.wait()
                tg.cancel_scope.cancel()
        finally:
            self.r.close()

    async def _pump(self, spool: Spool, pumped: anyio.Event) -> None:
        cap = self.exchange.config.max_response_buffer or 0
        try:
            while True:
                frames = await self.lease.read()
                assert frames is not None
                done = self.r.take(frames)
                del frames  # not held while the pump waits for the client below
                self.r.queued()
                if not done and not self.r.spill and spool.on_disk:
                    self._ask_to_spill(spool, cap)
                if done:
                    # Not while the feed is mid-write: the worker's next request must
                    # not get the rest of this one's body (later writes are refused).
                    assert self._lock is not None
                    async with self._lock:
                        self.lease.release()
                    break
                while spool.size > cap and not self.exchange.disconnected:
                    self.lease.pause()  # the client has to catch up first
                    try:
                        await self.r.wait_for_room()
                    finally:
                        self.lease.resume()
        except WorkerError as exc:
            await self._fail(exc)
        finally:
            self.r.done = True
            self.r.queued()
            pumped.set()

    def _ask_to_spill(self, spool: Spool, cap: int) -> None:
        """The client is far enough behind that the spool went to disk: ask the worker to
        write the rest into a file of the spool's itself (one copy, in the worker, instead
        of two in the front). Only a worker that runs as the front's user can open the
        file; only once nothing else writes to its pipe; never waiting for room in it."""
        assert self._lock is not None
        if not self.exchange.shares_files or not self._fed or self._lock.locked():
            return
        if cap <= spool.size:  # no room left to offer
            return
        try:
            fd = spool.spill_file()
        except SpoolError:
            self.r.spill = True  # no file to offer: the front goes on writing its own
            return
        allowance = spool.reserve(cap - spool.size)  # within the front's disk budget
        if allowance <= 0:
            self.r.spill = True  # the front writes its own, and the budget decides who pays
            return
        frame = proto.spill_frame(shared_path(fd), allowance)
        self.r.spill = self.lease.try_send(frame)
        if not self.r.spill:  # not offered after all (its pipe is full): asked again later
            spool.unreserve()

    # -- client -> worker -----------------------------------------------------------

    async def _feed(self, lock: anyio.Lock, more: bool, size: int, body: Spool | None) -> None:
        """Send the rest of the body, then wait for the client to go away."""
        x = self.exchange
        try:
            if body is not None:
                await self._send_body(lock, body)
                if not more:
                    async with lock:
                        await self.lease.send(proto.EOF_FRAME)
            self._fed = not more
            gone = await self._stream_body(lock, size) if more else False
            if not x.refused_with:
                # receive() returns only once the client has gone, on most servers
                if not gone and (await x.receive())["type"] != DISCONNECT:
                    return  # a receive that does not wait for the disconnect: nothing to watch
                x.disconnected = True
                self.r.queued()
            await self._client_left(lock)
            drained = self.r.drained
            if drained is not None and not drained.is_set():  # the app is told to stop
                try:
                    await drain_body(x.receive, linger_time(x.refused_with))
                finally:
                    drained.set()
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
            self.r.queued()
            await self._client_left(lock)

    async def _stream_body(self, lock: anyio.Lock, size: int) -> bool:
        """The rest of a body that is not buffered, to the worker as it comes, at a pace
        the client must keep as for a buffered one; True if the client left meanwhile.
        The front may refuse the rest (``x.refused_with``: 413 past ``max_body_size``, 408 for
        a client slower than :class:`Pace` allows); the app is then told to stop."""
        x, limit = self.exchange, self.exchange.config.max_body_size
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
                    check_size(size, limit, whole=not more)
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
        """Refuse the rest of the body: the answer is queued now (the drain's clock and
        the client's reading start together), and ended once the rest was drained."""
        self.exchange.refused_with = exc.status
        self.exchange.count_refusal(exc)
        self.r.drained = anyio.Event()
        if exc.whole:
            self.r.drained.set()  # nothing more comes
        self.r.own(exc.status, PHRASES[exc.status])
        self.r.queued()

    async def _send_body(self, lock: anyio.Lock, body: Spool) -> None:
        """A buffered body: what is in memory over the pipe; what is on disk, by naming
        the spool file, which the worker reads itself (no copy through the front) when it
        runs as the front's user and may open the front's descriptors."""
        if self.exchange.shares_files:
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
                if self.exchange.disconnected:
                    self.lease.client_left(self.exchange.config.abort_grace)
                await self.lease.send(proto.ABORT_FRAME)
        except WorkerError:
            pass

    # -- failures -------------------------------------------------------------------

    async def _fail(self, exc: WorkerError) -> None:
        lease, x = self.lease, self.exchange
        if isinstance(exc, WorkerTimeoutError) and x.disconnected:
            status, text, reason = 504, "Gateway Timeout", "stuck after disconnect"
        elif isinstance(exc, WorkerTimeoutError):
            status, text, reason = 504, "Gateway Timeout", "timeout"
        elif isinstance(exc, WorkerGoneError):
            status, text, reason = 502, "Bad Gateway", "crashed"
        else:
            status, text, reason = 502, "Bad Gateway", "protocol error"
        note = await lease.kill()  # a late worker's stacks come first: see Lease.kill
        lease.discard(reason)
        answered = not self.r.committed and not x.disconnected
        if answered:
            self.r.items.clear()
            self.r.own(status, text)
        elif x.config.app_errors == "raise" and not x.disconnected:
            x.failure = exc  # the response is cut off: say so to the caller
        worker = lease.worker
        log.error(
            "worker %d (pid %d) %s during %s (%s); %s%s",
            worker.id,
            worker.pid,
            reason if not isinstance(exc, ProtocolError) else f"{reason}: {exc}",
            x.request_line,
            worker.exit_status(),
            f"answered {status}" if answered else "response cut off",
            note,
        )
