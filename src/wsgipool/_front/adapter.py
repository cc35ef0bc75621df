"""The ASGI application: ``WsgiToAsgi`` and the per-request ``WsgiToAsgiInstance``.

Both keep asgiref's names, signatures and observable messages; the difference is where
the WSGI app runs: in a pool of worker processes instead of a thread of this one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any

import anyio

from .._config import Config
from .._errors import AppLoadError, WorkerStartError
from .._logging import install_fallback, request_id
from .._observe.pages import observer_for
from .._pool.pool import Pool
from .._pool.stats import PoolStats
from .._pool.supervisor import supervise
from .._types import Environ, Message, OptExcInfo, Receive, Scope, Send
from .._wire.appspec import describe, label
from .._wire.environ import REQUEST_ID_KEY, TooManyHeadersError, cgi_environ, complete_environ
from .._worker.wsgi import ErrorStream, FileWrapper, Responder
from .budget import BufferBudget, disk_budget
from .exchange import Exchange
from .guard import Refusal, Refusals, refusal
from .linger import answer_early, linger_before_reading
from .proxy import Proxies
from .request_id import RequestIds

log = logging.getLogger("wsgipool.front")


class WsgiToAsgi:
    """Wrap a WSGI application (a callable or ``"module:attr"``) as an ASGI 3 application.

    ``duplicate_header_limit`` means what it means in asgiref; every other keyword is a
    pool option (see :class:`wsgipool.Config`), e.g. ``workers=4, timeout=30``.
    """

    def __init__(
        self, wsgi_application: Any, duplicate_header_limit: int | None = 100, **options: Any
    ) -> None:
        self.wsgi_application = wsgi_application
        self.duplicate_header_limit = duplicate_header_limit
        if duplicate_header_limit is None:  # asgiref then serves any number of fields
            options.setdefault("limit_request_fields", 0)
        self.config = Config.from_options(options)
        # visible lines even if the host sets none
        install_fallback(self.config.log_level, self.config.log_format)
        self.spec = describe(wsgi_application)
        self.proxies = self.config.proxies()
        self.pool = Pool(self.spec, self.config)
        config = self.config
        self.budget = BufferBudget(  # bodies held in memory, and on disk
            config.buffer_memory or 0, disk_budget(config.buffer_disk, config.buffer_dir)
        )
        self.refusals = Refusals()  # also counted by the server layer of ``wsgipool serve``
        self.observer = observer_for(self.pool, label(self.spec), self.refusals, self.budget)
        header = self.config.request_id_header
        self.request_ids = RequestIds(header) if header else None

    def __repr__(self) -> str:
        return f"<WsgiToAsgi {label(self.spec)} workers={self.config.workers}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if self.request_ids is None:
                await self._http(scope, receive, send)
                return
            rid, scope = self.request_ids.assign(scope)
            token = request_id.set(rid)  # this request's task and the tasks it starts
            try:
                await self._http(scope, receive, self.request_ids.echo(send, rid))
            finally:
                request_id.reset(token)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            raise ValueError("WSGI wrapper received a non-HTTP scope")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit, observer = self.duplicate_header_limit, self.observer
        timing = None
        if observer is not None:
            if await observer.answer(scope, send):
                return
            timing = observer.timed(send)
        if timing is None:
            await serve(self.pool, self.budget, self.refusals, limit, scope, receive, send,
                        self.proxies)  # fmt: skip
            return
        try:
            await serve(self.pool, self.budget, self.refusals, limit, scope, receive,
                        timing.send, self.proxies)  # fmt: skip
        except Exception:
            timing.failed()
            raise

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Start every worker at startup, supervise them, stop them at shutdown."""
        await receive()  # lifespan.startup
        async with anyio.create_task_group() as tg:
            try:
                await self.pool.start()
            except (AppLoadError, WorkerStartError) as exc:
                await self.pool.aclose()
                message = f"wsgipool could not start {label(self.spec)}: {exc}"
                await send({"type": "lifespan.startup.failed", "message": message})
                return
            tg.start_soon(supervise, self.pool)
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await self.pool.aclose()
            tg.cancel_scope.cancel()
        await send({"type": "lifespan.shutdown.complete"})

    def stats(self) -> PoolStats:
        """A snapshot of the pool: its workers and their states, the queue, restarts."""
        return self.pool.stats()

    async def start(self) -> None:
        """Start every worker now (what lifespan startup does)."""
        await self.pool.start()

    async def reload(self) -> None:
        """Rolling restart: replace every worker, one at a time, with one that re-imports
        the app; zero failed requests. If the new code fails to import, the old workers
        keep serving and :class:`AppLoadError` carries the app's own error."""
        await self.pool.reload()

    async def log_stacks(self) -> int:
        """Log every busy worker's stacks now (what it runs, for how long, where), one
        entry per worker to ``wsgipool.pool``; returns how many. ``wsgipool serve`` does
        this on SIGUSR1. The workers go on: nothing is stopped."""
        return await self.pool.log_stacks()

    async def aclose(self) -> None:
        """Stop every worker: in-flight requests get ``graceful_timeout`` to finish."""
        await self.pool.aclose()

    async def __aenter__(self) -> WsgiToAsgi:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def serve(
    pool: Pool,
    budget: BufferBudget,
    refusals: Refusals,
    duplicate_header_limit: int | None,
    scope: Scope,
    receive: Receive,
    send: Send,
    proxies: Proxies | None = None,
) -> None:
    """Serve one ``http`` request: refused up front, or relayed through a worker."""
    refused = refusal(scope, pool.config.limits)
    if refused is not None:  # hostile or oversized: no worker, no body kept
        refusals.refused(refused, scope.get("client"))
        await answer_early(send, receive, *refused.messages(), linger_before_reading(scope))
        return
    try:
        cgi = cgi_environ(scope, duplicate_header_limit)
    except TooManyHeadersError:
        await answer_early(send, receive, *_TOO_MANY_HEADERS, linger_before_reading(scope))
        return
    if proxies is not None:
        try:
            proxies.apply(cgi, scope)
        except ValueError:  # a trusted proxy's Forwarded element we cannot read
            refusals.refused(_BAD_FORWARDED, scope.get("client"))
            await answer_early(send, receive, *_BAD_FORWARDED.messages(),
                               linger_before_reading(scope))  # fmt: skip
            return
    rid = request_id.get()
    if rid is not None:
        cgi[REQUEST_ID_KEY] = rid
    exchange = Exchange(pool, budget, refusals, scope, receive, send)
    first = await exchange.first_message(cgi)
    if first is not None and first["type"] == "http.request":  # else: nobody to answer
        await exchange.run(cgi, first)


_BAD_FORWARDED = Refusal(400, "bad forwarded", "the proxy's Forwarded header is malformed")
#: asgiref's answer to a header repeated more than ``duplicate_header_limit`` times.
_TOO_MANY_HEADERS: tuple[Message, Message] = (
    {"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"text/plain")]},
    {"type": "http.response.body", "body": b"Bad Request: Too many duplicate headers"},
)


class WsgiToAsgiInstance:
    """Per-request instance, as in asgiref; ``build_environ`` also works on its own."""

    def __init__(
        self,
        wsgi_application: Any,
        duplicate_header_limit: int | None = 100,
        *,
        pool: Pool | None = None,
        budget: BufferBudget | None = None,
        refusals: Refusals | None = None,
    ) -> None:
        self.wsgi_application = wsgi_application
        self.duplicate_header_limit = duplicate_header_limit
        self.pool = pool
        self.budget = budget or BufferBudget(0)
        self.refusals = Refusals() if refusals is None else refusals
        self.response_started = False
        self.response_content_length: int | None = None
        self._responder: Responder | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError("WSGI wrapper received a non-HTTP scope")
        if self.pool is None:
            raise RuntimeError("WsgiToAsgiInstance needs a pool: serve WsgiToAsgi(app) instead")
        self.scope = scope
        await serve(self.pool, self.budget, self.refusals, self.duplicate_header_limit, scope,
                    receive, send)  # fmt: skip

    def build_environ(self, scope: Scope, body: Any) -> Environ:
        """The full WSGI environ for ``scope`` with ``body`` as ``wsgi.input``."""
        cgi: dict[str, Any] = cgi_environ(scope, self.duplicate_header_limit)
        errors = ErrorStream(logging.getLogger("wsgipool.app").error)
        return complete_environ(cgi, body, errors, FileWrapper)

    def start_response(
        self,
        status: str,
        response_headers: list[tuple[str, str]],
        exc_info: OptExcInfo | None = None,
    ) -> Callable[[bytes], object]:
        """PEP 3333 ``start_response``; records ``response_start`` as asgiref does."""
        if self._responder is None:
            self._responder = Responder(self._write)
        responder = self._responder
        responder.headers_sent = self.response_started
        write = responder.start_response(status, response_headers, exc_info)
        self.response_content_length = responder.content_length
        self.response_start: Message = {
            "type": "http.response.start",
            "status": responder.status,
            "headers": responder.headers,
        }
        return write

    def _write(self, data: bytes) -> None:
        raise RuntimeError("write() is only available to an app running in a worker")
