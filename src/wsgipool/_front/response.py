"""One response, queued: the worker's frames in, ASGI messages out.

The relay's pump puts what the worker sends (:meth:`Response.take`) and its drain takes
messages out at the client's pace (:meth:`Response.next`). Body chunks of a streamed
response wait in a :class:`~wsgipool._front.spool.Spool`, the queue holding only their
places, so a slow client costs memory up to the budget and then disk. The queue also
decides the answers that are the front's own (a 500, a 502/504, a refused body's 413).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Protocol

import anyio

from .._config import Config
from .._errors import ProtocolError
from .._types import Message
from .._wire import frames as proto
from .._wire import remote as remote
from .budget import BufferBudget
from .guard import PHRASES, Refusals
from .spool import DiskBudgetSpent, Spool, SpoolError

log = logging.getLogger("wsgipool.front")
app_log = logging.getLogger("wsgipool.app")
END_MESSAGE: dict[str, Any] = {"type": "http.response.body"}
BODY = "http.response.body"
CLOSE = (b"connection", b"close")
#: Largest message made of queued chunks joined together.
COALESCE = 256 * 1024
#: ... and only when the front is this far behind: small responses keep their chunks.
COALESCE_BEHIND = 64 * 1024
#: Largest message when the budget has no room or the spool is on disk (see next()).
SLOW_MESSAGE = 64 * 1024
#: Bytes a response is credited as read when its client's pace is judged (drain_time).
READ_CREDIT = 1024 * 1024
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


class ClientSide(Protocol):
    """What a response needs of its request's client side (the exchange)."""

    config: Config
    budget: BufferBudget
    refusals: Refusals
    client: object
    disconnected: bool  # the client left, or was cut off
    refused_with: int  # 413 or 408: the front refused the rest of a streamed body (0: no)
    failure: BaseException | None  # raised from the ASGI call once done

    @property
    def request_line(self) -> str: ...

    @property
    def shares_files(self) -> bool: ...


class Response:
    """The queue of one response's messages, and the events its two ends wait on."""

    def __init__(self, client: ClientSide) -> None:
        self.client = client
        self.pending: Message | None = None  # a start message, until its first chunk
        self.committed = False  # a start message is queued: our own errors are too late
        self.items: deque[Item] = deque()
        self.spool: Spool | None = None  # body chunks of the streamed path
        self.done = False  # the response's last item is queued (or never will be)
        self.spill = False  # the worker was asked to write into the spool's spill file
        #: Set once a refused body was drained (see _linger); None: nothing refused.
        self.drained: anyio.Event | None = None
        self._wake: anyio.Event | None = None  # the drain waits for items
        self._room: anyio.Event | None = None  # the pump waits for the spool to shrink
        self._held = 0  # bytes of the last message sent, counted in the memory budget
        self._sending = 0  # ... of the message being sent, likewise
        self._began = 0.0  # when the spool was made (monotonic)
        self._read = 0  # bytes of the spool taken out for the client
        #: Cancelled to cut the client off mid-send (the drain's scope); set by the relay.
        self.drain_scope: anyio.CancelScope | None = None
        self.shed_for_disk = False  # cut off to keep the disk budget

    # -- the worker's side ------------------------------------------------------------

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

    def stream(self) -> Spool:
        """From now on body chunks wait in a spool; those queued by the first read (up
        to a pipe's worth) move into it, where the memory budget counts them."""
        client = self.client
        self.spool = Spool(client.budget, client.config.buffer_dir, holder=self)
        self._began = time.monotonic()
        client.budget.holders[self] = None
        queued, self.items = self.items, deque()
        for item in queued:
            if item is not CHUNK and item.get("more_body") and item["type"] == BODY:
                self._chunk(item["body"])
            else:
                self.items.append(item)
        return self.spool

    def close(self) -> None:
        """Let go of the spool and of what the budget counts for messages sent."""
        if self.spool is not None:
            self.spool.close()
        self.client.budget.holders.pop(self, None)
        self.client.budget.give(self._held + self._sending)
        self._held = self._sending = 0

    def _commit(self) -> None:
        if self.pending is not None:
            self.items.append(self.pending)
            self.pending = None
            self.committed = True

    def _chunk(self, data: bytes) -> None:
        if self.client.disconnected or self.client.refused_with:
            return
        self._commit()
        if self.spool is None:
            self.items.append({"type": "http.response.body", "body": data, "more_body": True})
            return
        try:
            self.spool.put(data)
        except SpoolError as exc:  # the response cannot be held: give up on the client
            self.cut_off(exc)
            return
        self.items.append(CHUNK)

    def cut_off(self, exc: SpoolError) -> None:
        if isinstance(exc, DiskBudgetSpent):
            self.shed()
            return
        log.error("response to %s cut off: %s", self.client.request_line, exc)
        self.client.disconnected = True

    def drain_time(self) -> float:
        """Seconds the client would take to read what this response holds on disk, at the
        pace it read so far (with ``READ_CREDIT`` bytes, over at least a second: a new
        response is not judged on its first milliseconds); 0 when nothing is on disk."""
        spool = self.spool
        claim = 0 if spool is None else spool.claim
        if not claim:
            return 0.0
        rate = (self._read + READ_CREDIT) / max(time.monotonic() - self._began, 1.0)
        return claim / rate

    def shed(self) -> None:
        """Cut the client off to keep the disk budget: its spool is freed now, its drain
        stops sending, the app is told to stop; one rate-limited warning, no error."""
        client = self.client
        client.budget.holders.pop(self, None)
        held = 0 if self.spool is None else self.spool.size
        if self.spool is not None:
            self.spool.close()  # freed now, even for a client already gone
        if client.disconnected:
            return
        client.disconnected = True
        self.shed_for_disk = True
        client.refusals.closed(
            "disk budget",
            f"the disk budget is spent and this client is furthest behind "
            f"({client.request_line}: {held} bytes held, {self._read} read)",
            client.client,
        )
        if self.drain_scope is not None:
            self.drain_scope.cancel()
        self.queued()
        self.make_room()

    def _adopt(self, size: int) -> None:
        if not self.spill or self.spool is None:
            raise ProtocolError("SPILLED frame from a worker that was not asked to spill")
        if self.client.disconnected or self.client.refused_with:
            return
        self._commit()
        items = self.items
        if not self.spool.adopt(size, merge=bool(items) and items[-1] is CHUNK):
            items.append(CHUNK)

    def _end(self) -> None:
        refused = self.client.refused_with
        if refused:
            self.own(refused, PHRASES[refused])
            return
        self._commit()
        if not self.committed:
            raise ProtocolError("worker ended a response it never started")
        if self.spool is not None:
            self.spool.unreserve()  # the worker writes no more of it
        self.items.append(END_MESSAGE)

    def own(self, status: int, text: str) -> None:
        """Queue a response of our own, unless the app's has begun. The answer to a body
        the front refused is ended only once that body was drained (see _linger)."""
        if self.committed:
            return
        self.committed = True
        if self.drained is None:
            self.items.extend(plain_response(status, text))
            return
        start, body = plain_response(status, text, CLOSE)
        self.items.extend((start, {**body, "more_body": True}, END_MESSAGE))

    def _app_failed(self, frame: proto.Error) -> None:
        client = self.client
        if client.refused_with:
            self.own(client.refused_with, PHRASES[client.refused_with])
        elif client.config.app_errors == "raise":  # the server answers 500, as with asgiref
            client.failure = remote.load(frame.message, frame.pickled, client.shares_files)
        else:
            app_log.error("%s", frame.message)
            if self.committed:
                log.error("response to %s cut off: the app failed", client.request_line)
            self.own(500, "Internal Server Error")

    # -- the client's side ------------------------------------------------------------

    def next(self) -> Message:
        """The next message. Chunks already queued behind a chunk (the client or the
        front fell behind) go out as one message of up to ``COALESCE`` bytes: one send
        instead of many; a client that keeps up still gets one message per chunk.

        A message sent may wait in the server's write buffer for as long as the client
        takes to read it, beyond our spool. So a message larger than ``SLOW_MESSAGE`` is
        counted in the memory budget until the next one has been sent (the server then
        has written it, as it takes a message only once its buffer drained), and is
        made only while the budget has room and the spool is not on disk; otherwise
        messages are ``SLOW_MESSAGE`` bytes at most, chunks split to fit. Many slow
        readers then hold little beyond the budget, however large the app's chunks."""
        item = self.items.popleft()
        if item is not CHUNK:
            return item
        spool, items, budget = self.spool, self.items, self.client.budget
        assert spool is not None
        roomy = not spool.on_disk and budget.take(COALESCE)
        data = self._take(spool, None if roomy else SLOW_MESSAGE)
        if items and items[0] is CHUNK and spool.size >= COALESCE_BEHIND:
            most = COALESCE if roomy else SLOW_MESSAGE
            parts, size = [data], len(data)
            while items and items[0] is CHUNK and size < most:
                items.popleft()
                part = self._take(spool, None if roomy else most - size)
                parts.append(part)
                size += len(part)
            data = b"".join(parts)
        self._read += len(data)
        if roomy:
            budget.give(COALESCE - len(data))  # what was set aside, less what it holds
            self._sending = len(data)
        if self._room is not None:
            self._room.set()
        return {"type": "http.response.body", "body": data, "more_body": True}

    def sent(self) -> None:
        """A message was taken by the server: the one before it has left its buffer."""
        self.client.budget.give(self._held)
        self._held, self._sending = self._sending, 0

    def _take(self, spool: Spool, limit: int | None) -> bytes:
        """The spool's next chunk, or ``limit`` bytes of it (the rest keeps its place)."""
        data = spool.get(limit)
        assert data is not None
        if spool.split:
            self.items.appendleft(CHUNK)
        return data

    # -- waiting ----------------------------------------------------------------------

    def queued(self) -> None:
        """Something was queued, or the response ended: wake the drain."""
        if self._wake is not None:
            self._wake.set()

    async def wait_for_items(self) -> None:
        self._wake = anyio.Event()
        await self._wake.wait()

    async def wait_for_room(self) -> None:
        """Until a message was taken out (or :meth:`make_room` says to stop waiting)."""
        self._room = anyio.Event()
        await self._room.wait()

    def make_room(self) -> None:
        if self._room is not None:
            self._room.set()
