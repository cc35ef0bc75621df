"""One HTTP request relayed between the ASGI server and one worker.

The exchange holds a :class:`~wsgipool._pool.lease.Lease` on its worker and talks to the
worker only through it. The worker never waits on the client: the body is read in full
first (:func:`wsgipool._front.intake.take_body`), and the response is taken as fast as the app
produces it, the worker released at its end, and only then sent at the client's pace
(held in a :class:`~wsgipool._front.spool.Spool` meanwhile, up to ``max_response_buffer``).

The common case (a small body, a response complete in the first pipe read) is straight
line code with no extra task: read, release, send. Otherwise :mod:`wsgipool._front.relay`
runs the response with a task that feeds the worker and watches for the client leaving.
"""

from __future__ import annotations

import logging
import math

from .._errors import (
    AppLoadError,
    OverloadedError,
    PoolClosedError,
    RequestNotSentError,
    WorkerGoneError,
    WorkerStartError,
)
from .._logging import printable
from .._pool.lease import Lease
from .._pool.pool import Pool
from .._pool.queue import Watch
from .._types import Message, Receive, Scope, Send
from .._wire import frames as proto
from .._wire.environ import request_target
from .budget import BufferBudget
from .guard import PHRASES, Refusals
from .intake import BodyRefused, Pace, check_size, first_message, take_body
from .linger import NO_LINGER, Linger, answer_early, linger_before_reading, linger_time
from .relay import Relay
from .response import CLOSE, plain_response
from .spool import Spool, SpoolError

log = logging.getLogger("wsgipool.front")
#: A body up to this size travels with the request (it fits an empty pipe); a larger
#: one is written by a task of its own while the response is read, so an app that
#: answers before reading its body cannot deadlock against the front.
INLINE_BODY = 32 * 1024


class Exchange:
    """Relays one request; created per request by the front."""

    __slots__ = (
        "budget",
        "client",
        "config",
        "disconnected",
        "failure",
        "pace",
        "pool",
        "receive",
        "refusals",
        "refused_with",
        "scope",
        "send",
        "started",
    )  # fmt: skip

    def __init__(
        self,
        pool: Pool,
        budget: BufferBudget,
        refusals: Refusals,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        self.pool = pool
        self.config = pool.config
        self.budget = budget
        self.refusals = refusals  # counted and logged at a rate that cannot flood
        self.scope = scope
        self.client = scope.get("client")
        self.receive = receive
        self.send = send
        self.started = False  # http.response.start has gone to the server
        self.disconnected = False  # the client left (or the server refused what we sent)
        self.refused_with = 0  # 413 or 408: the front refused the rest of a streamed body
        self.failure: BaseException | None = None  # raised from __call__ once done
        self.pace: Pace | None = None  # the client's pace sending a buffered body

    @property
    def shares_files(self) -> bool:
        """May the worker open the front's descriptors? (It runs as the front's user.)"""
        return self.pool.launcher.identity is None

    @property
    def request_line(self) -> str:
        """``"GET /path?query"``, for the log: the path as the client sent it (encoded),
        never a decoded one that could end the line."""
        return printable(f"{self.scope.get('method')} {request_target(self.scope)}")

    @property
    def client_address(self) -> str:
        """``"127.0.0.1:51234"`` (or what the server gave), for the log."""
        client = self.client
        if isinstance(client, (list, tuple)) and len(client) == 2:
            return f"{client[0]}:{client[1]}"
        return "-" if client is None else str(client)

    # -- sending --------------------------------------------------------------------

    async def respond(
        self, status: int, text: str, *extra: tuple[bytes, bytes], linger: Linger = NO_LINGER
    ) -> bool:
        """Answer with a short error response, if nothing was sent yet; with ``linger``,
        the rest of the body is drained before it ends (see _linger)."""
        if self.started or self.disconnected:
            return False
        await answer_early(self.deliver, self.receive, *plain_response(status, text, *extra),
                           linger)  # fmt: skip
        return True

    async def deliver(self, message: Message) -> None:
        """Send one message to the server; a client gone, or a message the server refuses
        (an invalid header, a body where none may be), ends the response, never the worker.
        """
        if self.disconnected:
            return
        self.started = True
        try:
            await self.send(message)
        except OSError:  # some servers raise once the client is gone
            self.disconnected = True
        except Exception as exc:
            self.disconnected = True
            log.error("the server refused the response to %s: %r", self.request_line, exc)

    # -- the request ----------------------------------------------------------------

    async def first_message(self, cgi: dict[str, str]) -> Message | None:
        """The request's first message; None once answered: 413 for a declared body over
        ``max_body_size``, before any of it is read (the server sends ``100 Continue``
        only once the body is asked for), or 408 (the client declared a body and sent none
        of it in time)."""
        if "CONTENT_LENGTH" not in cgi and "HTTP_TRANSFER_ENCODING" not in cgi:
            return await self.receive()  # no body to wait for
        declared = cgi.get("CONTENT_LENGTH", "")
        if declared.isdigit():
            try:
                check_size(int(declared), self.config.max_body_size, "Content-Length")
            except BodyRefused as exc:  # unless it waits for 100 Continue, it is coming
                await self._refuse(exc, linger_before_reading(self.scope))
                return None
        self.pace = Pace(self.config)  # buffered or not, the body must keep moving
        try:
            return await first_message(self.receive, self.pace)
        except BodyRefused as exc:  # none of it came: nothing to wait for
            await self._refuse(exc)
            return None

    async def _refuse(self, exc: BodyRefused, linger: Linger = NO_LINGER) -> None:
        """Answer a refused body; with ``linger``, read the rest of it first (see _linger)
        so the client, still sending, reads the answer instead of a reset."""
        self.count_refusal(exc)
        await self.respond(exc.status, PHRASES[exc.status], CLOSE, linger=linger)

    def count_refusal(self, exc: BodyRefused) -> None:
        """Count (and, at a rate that cannot flood, log) a body the front refused."""
        self.refusals.count(exc.status, exc.reason, f"{self.request_line}: {exc}", self.client)

    async def run(self, cgi: dict[str, str], first: Message) -> None:
        body: bytes = first.get("body", b"")
        more: bool = first.get("more_body", False)
        spool: Spool | None = None
        config = self.config
        if more and config.buffer_requests:
            taken = await self._buffer(cgi, first)
            if taken is None:
                return  # answered, or the client left
            body, spool = taken
            more = False
        else:
            try:
                check_size(len(body), config.max_body_size)
            except BodyRefused as exc:
                await self._refuse(exc, linger_time(413) if more else NO_LINGER)
                return
            if not more and config.buffer_requests and "HTTP_TRANSFER_ENCODING" in cgi:
                cgi["CONTENT_LENGTH"] = str(len(body))  # a chunked body complete at once
        payload: list[bytes | memoryview] = [proto.request_frame(cgi)]
        if len(body) > INLINE_BODY:
            spool = Spool(self.budget, config.buffer_dir)
            try:
                spool.put(body)  # written by the feeding task, while the response is read
            except SpoolError as exc:  # no room on disk (the budget, or the disk itself)
                spool.close()
                log.warning("503 for %s: %s", self.request_line, exc)
                await self.respond(503, "Service Unavailable", (b"retry-after", b"1"))
                return
        elif body:
            payload += proto.body_frames(body)
        if spool is None and not more:
            payload.append(proto.EOF_FRAME)
        try:
            lease = await self._dispatch(payload, watch=not more, whole=spool is None and not more)
            if lease is not None:
                await Relay(self, lease).run(more, len(body), spool)
        finally:
            if spool is not None:
                spool.close()  # its file and its share of the memory budget
        if self.failure is not None:
            raise self.failure

    async def _buffer(
        self, cgi: dict[str, str], first: Message
    ) -> tuple[bytes, Spool | None] | None:
        """Read the rest of the body: ``(body, None)`` if small, else ``(b"", spool)``;
        None once answered (or the client left)."""
        pace = self.pace or Pace(self.config)
        try:
            spool = await take_body(self.receive, first, self.config, self.budget, pace)
        except BodyRefused as exc:  # the client is still sending
            await self._refuse(exc, NO_LINGER if exc.whole else linger_time(exc.status))
            return None
        if spool is None:
            return None  # the client left
        cgi["CONTENT_LENGTH"] = str(spool.size)  # exact, even for a chunked upload
        if spool.size > INLINE_BODY:
            return b"", spool
        body = b"".join(iter(spool.get, None))
        spool.close()  # it may have had to use a file (the memory budget was full)
        return body, None

    async def _dispatch(
        self, payload: list[bytes | memoryview], watch: bool, whole: bool
    ) -> Lease | None:
        """Hand the request to a worker; one that was gone before it read a byte of it is
        replaced, as often as the pool may have workers. A ``whole`` request (the payload
        ends with EOF) may go to its worker with the hand-over, and is then answered even
        if its client leaves meanwhile; one with more body to feed never goes ahead, so a
        client that left never has the app told to stop before its body is in."""
        ahead = payload if whole else []
        for _ in range(self.pool.limit + 1):
            lease = await self._acquire(self._client_gone if watch else None, ahead)
            if lease is None:
                return None
            lease.describe(self)
            if lease.request_sent:
                return lease
            try:
                await lease.send(*payload)
                return lease
            except RequestNotSentError:
                lease.discard("died while idle")
            except WorkerGoneError:
                lease.discard("died while idle")
                break
            except BaseException:
                lease.release(served=False)  # cancelled before the first byte
                raise
        await self.respond(502, "Bad Gateway")
        return None

    async def _client_gone(self) -> None:
        """Return once the client disconnects (the body is complete: nothing else comes)."""
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.disconnected = True

    async def _acquire(
        self, watch: Watch | None, payload: list[bytes | memoryview]
    ) -> Lease | None:
        try:
            return await self.pool.acquire(watch, payload)
        except (OverloadedError, PoolClosedError) as exc:
            log.warning("503 for %s: %s", self.request_line, exc)
            await self.respond(503, "Service Unavailable", (b"retry-after", b"1"))
        except AppLoadError as exc:  # the pool logs each failed start-up once
            log.debug("503 for %s: the app could not be loaded: %s", self.request_line, exc)
            retry = str(max(1, math.ceil(exc.retry_after))).encode()
            await self.respond(503, "Service Unavailable", (b"retry-after", retry))
        except WorkerStartError as exc:
            log.error("502 for %s: no worker could be started: %s", self.request_line, exc)
            await self.respond(502, "Bad Gateway")
        return None
