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

from ._config import Config
from ._spool import MemoryBudget, Spool
from ._types import Message, Receive


class Pace:
    """Progress of one client in one direction, and how long it may take for the next."""

    __slots__ = ("_began", "_grace", "_rate", "_timeout", "moved")

    def __init__(self, config: Config) -> None:
        self._began = time.monotonic()
        self._timeout = config.client_timeout
        self._rate = config.min_client_rate
        self._grace = config.client_rate_grace
        self.moved = 0  # bytes so far

    def wait(self) -> float:
        """Seconds the next piece of progress may take (0 or less: too slow already)."""
        now = time.monotonic()
        limit = self._timeout
        if self._rate:
            # The rate holds while moved / (t - began) >= rate, and always during the grace.
            due = self._began + max(self._grace, self.moved / self._rate)
            limit = min(limit, due - now)
        return limit

    def idle(self, seconds: float) -> None:
        """``seconds`` in which nothing was asked of the client do not count against its
        rate: a response the app is slow to produce (server-sent events, a long poll)."""
        self._began += seconds

    def why(self) -> str:
        elapsed = time.monotonic() - self._began
        return f"{self.moved} bytes in {elapsed:.1f}s"


class BodyRefused(Exception):
    """The body was refused before any worker saw it; ``status`` says how to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


async def first_message(receive: Receive, pace: Pace) -> Message:
    """The request's first message, which the server gives only once a byte of the body
    came: a client that sends its headers and then nothing gets 408 like a slow one."""
    with anyio.move_on_after(max(pace.wait(), 0)):
        return await receive()
    raise BodyRefused(408, f"no body: {pace.why()}")


async def take_body(
    receive: Receive, first: Message, config: Config, budget: MemoryBudget, pace: Pace
) -> Spool | None:
    """The whole request body, held by the front; None if the client left meanwhile.

    Raises :class:`BodyRefused` with 413 past ``max_body_size`` and with 408 for a client
    slower than ``pace`` allows (the pace of the whole body, first message included).
    """
    spool = Spool(budget, config.buffer_dir)
    limit = config.max_body_size
    message = first
    try:
        while True:
            chunk: bytes = message.get("body", b"")
            if chunk:
                pace.moved += len(chunk)
                if limit is not None and pace.moved > limit:
                    raise BodyRefused(413, f"body over max_body_size ({limit} bytes)")
                spool.put(chunk)
            if not message.get("more_body", False):
                return spool
            with anyio.move_on_after(max(pace.wait(), 0)):
                message = await receive()
                if message["type"] == "http.disconnect":
                    spool.close()
                    return None
                continue
            raise BodyRefused(408, f"body too slow: {pace.why()}")
    except BaseException:
        spool.close()
        raise
