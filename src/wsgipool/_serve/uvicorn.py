"""uvicorn's HTTP protocols with an edge: a header timeout, a connection bound, head limits.

uvicorn waits for request headers forever and accepts every connection; these
subclasses of its h11 and httptools protocols (uvicorn takes a class as ``http=``; the
httptools one lives in :mod:`wsgipool._serve.httptools`, imported only when used) add,
for each connection:

* a bound: past ``max_connections`` open connections, the cheapest one is closed for the
  new one (an idle kept-alive connection, else the oldest unfinished head, else the slowest
  upload below ``min_client_rate``); only when all do real work does the new one get 503;
* a header timeout: a connection that has not completed a request head within
  ``header_timeout`` of its first byte (or of being opened) is closed, with 408 if it
  had sent part of one;
* the head limits, counted on the raw bytes before the parser buffers them
  (:class:`~wsgipool._serve.edge.HeadScanner`); a head that starts inside a read (pipelined)
  is only held to the total size a head may have.

Everything else is uvicorn's own behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .._front.guard import LOG_EVERY, Refusal
from .._front.linger import LINGER_BYTES, LINGER_GAP, LINGER_TIME_SLOW
from .corked import CorkedTransport
from .edge import EdgeSettings, HeadScanner, Sheddable, small_head

_TIMED_OUT = Refusal(408, "header_timeout", "the request head took too long")
_TOO_MANY = Refusal(503, "max_connections", "too many open connections")
_HEAD_TOO_LARGE = Refusal(431, "head_size", "the request head is too large")


class EdgeMixin:
    """The edge, for any uvicorn HTTP protocol; subclasses say where the parser is."""

    edge: ClassVar[EdgeSettings]
    # uvicorn's, set by its protocol classes:
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    connections: set[Any]
    client: tuple[str, int] | None
    cycle: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scanner: HeadScanner | None = None
        self.loose = 0  # bytes of a head that began inside a read
        self.head_deadline: float | None = None  # loop time the head must be complete by
        self.head_timer: asyncio.TimerHandle | None = None
        self.refused = False
        self.linger_until: float | None = None  # set once a refused connection lingers
        self.linger_heard = 0.0
        self.lingered = 0
        self.head_since = 0.0  # loop time the head being received began
        self.body_since = 0.0  # loop time the last head was complete
        self.body_bytes = 0  # bytes received since (the request body, mostly)

    def between_messages(self) -> bool:
        """The next byte received starts a request head."""
        raise NotImplementedError

    def inside_head(self) -> bool:
        """The parser holds part of a request head."""
        raise NotImplementedError

    def receiving_body(self) -> bool:
        """A request body is still arriving."""
        raise NotImplementedError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A response's head leaves with its first body chunk: one send, not two.
        super().connection_made(CorkedTransport(transport, self.loop))  # type: ignore[misc]
        limit = self.edge.max_connections
        if limit is not None and len(self.connections) > limit and not self.shed_another():
            self.refuse(_TOO_MANY)
            return
        self.arm()

    def shed_another(self) -> bool:
        """Make room for this new connection by closing the cheapest other one; False if
        every other connection does real work (a response, an upload at a fair rate)."""
        idle = self.edge.idle
        while idle:  # the longest idle first; no scan
            other = next(iter(idle))
            del idle[other]
            if other.idle():
                other.shed("shed idle", "idle, closed for a new connection")
                return True
        now, floor = self.loop.time(), self.edge.min_upload_rate
        found = Sheddable()
        for other in self.connections:
            if other is self or not isinstance(other, EdgeMixin):
                continue
            if other.transport.is_closing():
                continue
            if other.refused:
                found.refused = other
                break
            cycle = other.cycle
            if other.head_deadline is not None and (cycle is None or cycle.response_complete):
                found.consider_head(other, other.head_since)
            elif cycle is not None and other.receiving_body():
                elapsed = max(now - other.body_since, 1.0)
                found.consider_upload(other, other.body_bytes / elapsed, floor)
        picked = found.pick()
        if picked is None:
            return False
        other, reason = picked
        other.shed(reason, "closed for a new connection at max_connections")
        return True

    def idle(self) -> bool:
        """Kept alive between requests, nothing of the next one received (a pipelined
        request may have started since it was registered)."""
        cycle = self.cycle
        if self.transport.is_closing() or not (cycle is None or cycle.response_complete):
            return False
        return self.head_deadline is None and self.between_messages()

    def shed(self, reason: str, detail: str) -> None:
        """Close this connection to make room for another; counted, not logged each time."""
        self.edge.idle.pop(self, None)
        self.edge.refusals.closed(reason, detail, self.client)
        self.refused = True
        self.disarm()
        self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if getattr(self, "timeout_keep_alive_task", None) is not None:
            self.edge.idle[self] = None  # kept alive, waiting for the next request

    def connection_lost(self, exc: Exception | None) -> None:
        self.edge.idle.pop(self, None)
        self.disarm()
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        self.edge.idle.pop(self, None)
        if self.refused:
            if self.linger_until is not None:
                self.lingering(data)
            return
        if self.scanner is None and self.between_messages():
            if small_head(data, self.edge.limits):  # the usual case: nothing to count
                self.head_complete()  # the parser has the whole head now
                super().data_received(data)  # type: ignore[misc]
                return
            self.scanner = HeadScanner(self.edge.limits)
        found = self.scan(data)
        if found is not None:
            self.refuse(found)
            return
        cycle = self.cycle
        super().data_received(data)  # type: ignore[misc]
        if self.cycle is not cycle:  # the parser has a whole head: the clock stops
            self.head_complete()

    def scan(self, data: bytes) -> Refusal | None:
        """Count the bytes of a head before the parser buffers them."""
        if self.scanner is not None:
            self.arm()
            found = self.scanner.feed(data)
            if self.scanner.done:
                self.scanner = None
            return found
        if self.inside_head():  # a head that began inside an earlier read
            self.arm()
            self.loose += len(data)
            cap = self.edge.head_cap
            return _HEAD_TOO_LARGE if cap is not None and self.loose > cap else None
        self.body_bytes += len(data)
        return None  # a body

    def head_complete(self) -> None:
        self.loose = 0
        self.head_deadline = None
        self.body_since = self.loop.time()
        self.body_bytes = 0

    def arm(self) -> None:
        """Start the head's clock (a no-op while it runs). One timer per connection at a
        time: a head that completes only clears the deadline, so a kept-alive connection
        schedules no timer per request."""
        timeout = self.edge.header_timeout
        if timeout is None or self.head_deadline is not None:
            return
        self.head_since = self.loop.time()
        self.head_deadline = self.head_since + timeout
        if self.head_timer is None:
            self.head_timer = self.loop.call_at(self.head_deadline, self.header_timer)

    def disarm(self) -> None:
        self.head_deadline = None

    def header_timer(self) -> None:
        self.head_timer = None
        if self.head_deadline is None:
            return
        if self.loop.time() < self.head_deadline:  # a later head: wait for its deadline
            self.head_timer = self.loop.call_at(self.head_deadline, self.header_timer)
            return
        self.head_deadline = None
        self.header_timed_out()

    def header_timed_out(self) -> None:
        protocol: object = self.transport.get_protocol()
        if self.transport.is_closing() or protocol is not self:
            return  # closed, or upgraded to a WebSocket
        if self.cycle is not None and not self.cycle.response_complete:
            self.arm()  # a pipelined head waits behind a response in progress
            return
        if self.scanner is not None or not self.between_messages():  # part of a head came
            self.refuse(_TIMED_OUT)
        else:  # connected, sent nothing
            self.edge.refusals.closed(
                "header_timeout", "no request within the timeout", self.client
            )
            self.refused = True
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what its parser rejects, counted with the other refusals."""
        self.edge.refusals.refused(Refusal(400, "invalid", msg), self.client)
        self.refused = True
        self.disarm()
        super().send_400_response(msg)  # type: ignore[misc]

    def refuse(self, found: Refusal) -> None:
        """Answer ``found`` and close the connection; what more comes is dropped."""
        self.refused = True
        self.disarm()
        if found.status in (408, 503):
            self.edge.refusals.closed(found.reason, found.detail, self.client)
        else:
            self.edge.refusals.refused(found, self.client)
        if not (self.cycle is None or self.cycle.response_complete):
            self.transport.close()  # a refusal never interleaves with a response
            return
        self.transport.write(found.response())
        if found is _TOO_MANY:
            self.transport.close()  # shed at once: this connection must not stay
        else:
            self.linger()

    def linger(self) -> None:
        """Close once the client stops sending, not before: a close with its bytes still
        unread would be a reset, and the client would lose the answer (see _linger)."""
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()  # the answer, then FIN
        with contextlib.suppress(Exception):
            transport.resume_reading()
        self.lingered = 0
        self.linger_until = self.loop.time() + LINGER_TIME_SLOW
        self.linger_heard = self.loop.time()
        self.loop.call_later(LINGER_GAP, self.linger_check)

    def lingering(self, data: bytes) -> None:
        """Bytes of a refused connection: dropped, within the bounds."""
        self.lingered += len(data)
        self.linger_heard = self.loop.time()
        if self.lingered > LINGER_BYTES:
            self.transport.close()

    def linger_check(self) -> None:
        now, until = self.loop.time(), self.linger_until
        if self.transport.is_closing() or until is None:
            return
        if now >= until or now - self.linger_heard >= LINGER_GAP:
            self.transport.close()
            return
        self.loop.call_at(min(until, self.linger_heard + LINGER_GAP), self.linger_check)


class EdgeH11Protocol(EdgeMixin, H11Protocol):
    """uvicorn's h11 protocol with the edge."""

    conn: h11.Connection

    def between_messages(self) -> bool:
        conn = self.conn
        return conn.their_state in (h11.IDLE, h11.DONE) and not conn.trailing_data[0]

    def inside_head(self) -> bool:
        return self.conn.their_state in (h11.IDLE, h11.DONE)

    def receiving_body(self) -> bool:
        return self.conn.their_state is h11.SEND_BODY

    def on_response_complete(self) -> None:
        """h11 parses a pipelined request only now: its head may be complete, or partial."""
        cycle = self.cycle
        super().on_response_complete()
        if self.cycle is not cycle:
            self.head_complete()
        elif self.inside_head() and not self.between_messages():
            self.arm()


class RepeatFilter(logging.Filter):
    """Lets uvicorn's per-request warnings about bad requests through once per
    :data:`~wsgipool._front.guard.LOG_EVERY` seconds: a flood of them must not flood the log;
    drops its error for a response the front cut off (the front counts and logs those)."""

    MESSAGES = frozenset({"Invalid HTTP request received.", "Unsupported upgrade request."})
    #: Never let through: the front returns without completing a response only when it
    #: cut the client off (too slow, the disk budget), and says so itself, with counts.
    SILENT = frozenset({"ASGI callable returned without completing response."})

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in self.SILENT:
            return False
        if record.msg not in self.MESSAGES:
            return True
        now = time.monotonic()
        if now - self.last.get(record.msg, -LOG_EVERY) < LOG_EVERY:
            return False
        self.last[record.msg] = now
        return True


def quiet_repeats() -> None:
    """Install :class:`RepeatFilter` on uvicorn's error log (once)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, RepeatFilter) for f in logger.filters):
        logger.addFilter(RepeatFilter())
