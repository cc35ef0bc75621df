"""ASGI and WSGI type aliases shared by the front's modules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from types import TracebackType
from typing import Any, Literal, Protocol, TypedDict

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
OptExcInfo = ExcInfo | tuple[None, None, None]
Environ = dict[str, Any]
WriteCallable = Callable[[bytes], object]


class StartResponse(Protocol):
    def __call__(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: OptExcInfo | None = ...,
        /,
    ) -> WriteCallable: ...


WSGIApplication = Callable[[Environ, StartResponse], Iterable[bytes]]
Headers = list[tuple[bytes, bytes]]


class ResponseStart(TypedDict):
    type: Literal["http.response.start"]
    status: int
    headers: Headers


class _ResponseBodyType(TypedDict):
    type: Literal["http.response.body"]


class ResponseBody(_ResponseBodyType, total=False):
    body: bytes
    more_body: bool
