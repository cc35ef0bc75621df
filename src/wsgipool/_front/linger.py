"""Answering before the body is read, so that the client reads the answer.

A front that refuses a request (413, 408, a 4xx of the guard) while the client is still
sending its body, and then closes, closes a socket with unread bytes in it: the kernel
answers with a reset, which also throws away the answer the client has not read yet.
An HTTP client writes its whole body before it reads, so it sees a broken connection,
not the 413. nginx avoids this with ``lingering_close``: after the answer it goes on
reading, and discarding, for a bounded time. We do the same through ASGI, which works
on every server: the answer's head and body go out at once, then the rest of the
request body is read and dropped, and only then is the response completed (which is
when the server closes the connection, now with nothing left unread).

A client that sent ``Expect: 100-continue`` and was refused before it was asked for the
body sends none of it, unless its server sent ``100 Continue`` on its own as soon as it
read the head (hypercorn does); so for it the front waits for the body only a short gap.
"""

from __future__ import annotations

import anyio

from .._types import Message, Receive, Scope, Send

#: The most seconds spent reading a refused body (nginx's ``lingering_time``).
LINGER_TIME = 30.0
#: ... for a client already refused for being slow (408): it gets less.
LINGER_TIME_SLOW = 5.0
#: Longest gap between two pieces of it (nginx's ``lingering_timeout``).
LINGER_GAP = 5.0
#: The most bytes of it read and dropped.
LINGER_BYTES = 256 * 1024 * 1024
#: Longest gap when the client may be waiting for a ``100 Continue`` it will not get.
EXPECT_GAP = 1.0
END: Message = {"type": "http.response.body", "body": b"", "more_body": False}
#: (seconds, gap) of a drain; (0, 0): none.
Linger = tuple[float, float]
NO_LINGER: Linger = (0.0, 0.0)


def linger_time(status: int) -> Linger:
    """How the rest of a body being sent, refused with ``status``, is read and dropped."""
    return (LINGER_TIME_SLOW if status == 408 else LINGER_TIME), LINGER_GAP


def linger_before_reading(scope: Scope) -> Linger:
    """How to drain the body of a request refused before any of it was read: not at
    all if none was declared, with a short gap if the client waits for ``100 Continue``."""
    declared = expects = False
    for name, value in scope.get("headers", ()):
        if name == b"expect" and value.strip().lower() == b"100-continue":
            expects = True
        elif name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            declared = True
    if not declared:
        return NO_LINGER
    return LINGER_TIME, EXPECT_GAP if expects else LINGER_GAP


async def drain_body(receive: Receive, linger: Linger) -> int:
    """Read and drop the rest of the request body, within the bounds above; the bytes
    dropped."""
    dropped = 0
    seconds, most = linger
    with anyio.move_on_after(seconds):
        while dropped <= LINGER_BYTES:
            with anyio.move_on_after(most) as gap:
                message = await receive()
            if gap.cancelled_caught or message["type"] != "http.request":
                break
            dropped += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
    return dropped


async def answer_early(
    send: Send, receive: Receive, start: Message, body: Message, linger: Linger
) -> None:
    """Send a complete answer; unless ``linger`` is NO_LINGER, drain the body before
    ending it."""
    await send(start)
    if linger == NO_LINGER:
        await send(body)
        return
    await send({**body, "more_body": True})
    await drain_body(receive, linger)
    await send(END)
