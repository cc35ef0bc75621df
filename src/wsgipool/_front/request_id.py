"""Request ids: one per request, taken from the client's header when it is safe, else new.

A proxy in front (nginx's ``$request_id``, a load balancer's trace header) or the client
may send an id; keeping it lets one id follow the request across systems. It is echoed
on the response and written to logs, so only a short value of safe characters is kept:
anything else is replaced by a new id, never passed on.
"""

from __future__ import annotations

import itertools
import os
import re

from .._types import Message, Scope, Send

#: What a client's id may be: at most 128 characters of these.
SAFE_ID = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,128}")


#: 64 random bits per process, then a count: ids unique across fronts without
#: coordination, at a sixth of the cost of ``uuid4`` (no system call per request).
_prefix = ""
_count = itertools.count()


def _reseed() -> None:
    """A new prefix: at import, and in a child forked after it (a server that imports the
    app once, then forks its workers), which would otherwise repeat its parent's ids."""
    global _prefix, _count
    _prefix, _count = os.urandom(8).hex(), itertools.count()


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_id() -> str:
    """32 hex digits: this process's random prefix and the request's number."""
    return f"{_prefix}{next(_count):016x}"


class RequestIds:
    """Assigns ids under one header name (``X-Request-ID`` unless configured otherwise)."""

    def __init__(self, header: str) -> None:
        self.name = header.lower().encode("latin-1")
        self.header = header.encode("latin-1")

    def assign(self, scope: Scope) -> tuple[str, Scope]:
        """The request's id, and the scope whose header carries exactly that id (so the
        app's ``HTTP_X_REQUEST_ID`` is the id in use, never an unsafe value)."""
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers", ()))
        given = [value for name, value in headers if name.lower() == self.name]
        if len(given) == 1 and SAFE_ID.fullmatch(given[0]):
            return given[0].decode("ascii"), scope
        rid = new_id()
        kept = [(name, value) for name, value in headers if name.lower() != self.name]
        kept.append((self.name, rid.encode("ascii")))
        return rid, {**scope, "headers": kept}

    def echo(self, send: Send, rid: str) -> Send:
        """``send``, with the id added to the response head unless the app set one."""
        value = rid.encode("ascii")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(name.lower() == self.name for name, _ in headers):
                    headers.append((self.header, value))
                    message = {**message, "headers": headers}
            await send(message)

        return send_with_id
