"""What the front allows a client: how slow it may be, and reading its body up front.

Workers are synchronous: one that waits on a slow client waits for everyone. So the front
reads a request body in full before it takes a worker (``buffer_requests``), and holds a
response for a slow reader so the worker is free as soon as the app is done. Either way
the client must keep moving: :class:`Pace` bounds the gap between two pieces of progress
(``client_timeout``, as nginx's ``client_body_timeout``/``send_timeout``) and, after a
grace period, the average rate (``min_client_rate``, as Kestrel's ``MinRequestBodyDataRate``
and ``MinResponseDataRate``), so a client trickling 2 bytes a second is cut within
seconds while a slow but moving mobile client is not.
"""

from __future__ import annotations

import time

import anyio

from .._config import Config
from .._types import Message, Receive
from .budget import BufferBudget
from .spool import Spool, SpoolError


class Pace:
    """How fast one client moves in one direction, and how long its next wait may last.

    Only the time the client is to blame counts: waiting for its body, or for it to take
    a response chunk. Time the app takes to produce the next chunk does not, so a slow
    event stream is never mistaken for a slow reader.
    """

    __slots__ = ("_grace", "_rate", "_since", "_timeout", "blamed", "moved")

    def __init__(self, config: Config) -> None:
        self._timeout = config.client_timeout
        self._rate = config.min_client_rate
        self._grace = config.client_rate_grace
        self._since = 0.0
        self.blamed = 0.0  # seconds spent waiting on the client so far
        self.moved = 0  # bytes so far

    def begin(self) -> float:
        """A wait on the client starts; the seconds it may last (0 or less: too slow)."""
        self._since = time.monotonic()
        if not self._rate:
            return self._timeout
        # The rate holds while moved / blamed >= rate, and always during the grace.
        return min(self._timeout, max(self._grace, self.moved / self._rate) - self.blamed)

    def end(self, size: int) -> None:
        """The wait ended with ``size`` bytes moved."""
        self.blamed += time.monotonic() - self._since
        self.moved += size

    def why(self) -> str:
        return f"{self.moved} bytes in {self.blamed + time.monotonic() - self._since:.1f}s"


class BodyRefused(Exception):
    """The body was refused before any worker saw it; ``status`` says how to answer and
    ``reason`` names the kind (for the counts), the message says what happened."""

    def __init__(self, status: int, reason: str, detail: str, whole: bool = False) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.whole = whole  # the body had all arrived: nothing is left to drain


def check_size(size: int, limit: int | None, what: str = "the body", whole: bool = False) -> None:
    """The one rule for ``max_body_size``: :class:`BodyRefused` (413) past it; ``whole``:
    the body has all arrived."""
    if limit is not None and size > limit:
        detail = f"{what} is over max_body_size ({limit} bytes)"
        raise BodyRefused(413, "body too large", detail, whole)


async def first_message(receive: Receive, pace: Pace) -> Message:
    """The request's first message, which the server gives only once a byte of the body
    came: a client that sends its headers and then nothing gets 408 like a slow one."""
    with anyio.move_on_after(max(pace.begin(), 0)):
        message = await receive()
        pace.end(len(message.get("body", b"")))
        return message
    raise BodyRefused(408, "body too slow", f"no body: {pace.why()}")


async def take_body(
    receive: Receive, first: Message, config: Config, budget: BufferBudget, pace: Pace
) -> Spool | None:
    """The whole request body, held by the front; None if the client left meanwhile.

    Raises :class:`BodyRefused` with 413 past ``max_body_size`` and with 408 for a client
    slower than ``pace`` allows (the pace of the whole body, first message included).
    """
    spool = Spool(budget, config.buffer_dir, merge=True)  # a body: boundaries do not matter
    limit = config.max_body_size
    message = first
    try:
        with anyio.CancelScope() as scope:  # one scope, its deadline moved per message
            while True:
                chunk: bytes = message.get("body", b"")
                if chunk:
                    check_size(spool.size + len(chunk), limit,
                               whole=not message.get("more_body", False))  # fmt: skip
                    spool.put(chunk)
                if not message.get("more_body", False):
                    return spool
                scope.deadline = anyio.current_time() + max(pace.begin(), 0)
                message = await receive()
                pace.end(len(message.get("body", b"")))
                if message["type"] == "http.disconnect":
                    spool.close()
                    return None
        raise BodyRefused(408, "body too slow", pace.why())
    except SpoolError as exc:
        spool.close()
        raise BodyRefused(503, "no room to buffer", str(exc)) from exc
    except BaseException:
        spool.close()
        raise
