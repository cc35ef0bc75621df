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
body does not send it, so nothing lingers for it.
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
END: Message = {"type": "http.response.body", "body": b"", "more_body": False}


def linger_time(status: int) -> float:
    """How long the body of a request refused with ``status`` is read and dropped."""
    return LINGER_TIME_SLOW if status == 408 else LINGER_TIME


def body_may_follow(scope: Scope) -> bool:
    """Will the client send a body we have not asked for? (A declared one, unless it
    waits for ``100 Continue``, which a refused request never gets.)"""
    declared = False
    for name, value in scope.get("headers", ()):
        if name == b"expect" and value.strip().lower() == b"100-continue":
            return False
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            declared = True
    return declared


async def drain_body(receive: Receive, seconds: float = LINGER_TIME) -> int:
    """Read and drop the rest of the request body, within the bounds above; the bytes
    dropped."""
    dropped = 0
    with anyio.move_on_after(seconds):
        while dropped <= LINGER_BYTES:
            with anyio.move_on_after(LINGER_GAP) as gap:
                message = await receive()
            if gap.cancelled_caught or message["type"] != "http.request":
                break
            dropped += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
    return dropped


async def answer_early(
    send: Send, receive: Receive, start: Message, body: Message, seconds: float
) -> None:
    """Send a complete answer; with ``seconds``, drain the body before ending it."""
    await send(start)
    if not seconds:
        await send(body)
        return
    await send({**body, "more_body": True})
    await drain_body(receive, seconds)
    await send(END)
