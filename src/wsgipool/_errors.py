"""Exceptions raised by wsgipool.

WsgiPoolError
├── ConfigError          bad option or app reference, found at construction time
├── AppLoadError         the worker could not import or unpickle the app
├── PoolClosedError      a request arrived after shutdown began
├── OverloadedError      the wait queue is full or the wait took too long
├── AppError             the WSGI app raised; ``__cause__`` has the worker's traceback
└── WorkerError          a worker broke its side of the channel
    ├── WorkerStartError a worker could not be started (killed meanwhile, OS limits)
    ├── WorkerGoneError  the worker's pipe closed (it exited or was killed)
    │   └── RequestNotSentError  ... before any byte of the request reached it
    ├── WorkerTimeoutError  the worker held one request longer than ``timeout``
    ├── LeaseEndedError  a write after the request's lease ended (refused, never sent)
    └── ProtocolError    the worker sent a malformed or oversized frame

RequestTimeout (TimeoutError)  raised inside the app, in a worker, when its request runs
                               past ``timeout`` with ``timeout_grace`` set
"""

from __future__ import annotations


class WsgiPoolError(Exception):
    """Base class of every error wsgipool raises on purpose."""


class ConfigError(WsgiPoolError, ValueError):
    """An option or the app reference is invalid."""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        #: The option at fault, so the CLI can name its flag instead.
        self.option = option


class AppLoadError(WsgiPoolError):
    """A worker failed to load the WSGI application; the message is the app's own error.

    ``traceback`` is the app's traceback when the worker sent one; ``retry_after`` is how
    many seconds the pool waits before it tries again (0: it tries at once).
    """

    def __init__(self, message: str, traceback: str = "", retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.traceback = traceback
        self.retry_after = retry_after


class PoolClosedError(WsgiPoolError):
    """The pool is shutting down and takes no new requests."""


class OverloadedError(WsgiPoolError):
    """No worker became free within the queue limits."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, as text (it cannot travel)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class AppError(WsgiPoolError):
    """The WSGI app raised while serving a request; raised from ``WsgiToAsgi.__call__``.

    Its ``__cause__`` is a :class:`RemoteTraceback` with the app's own traceback, as
    ``concurrent.futures`` attaches one for an exception raised in a process pool.
    """

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback
        if traceback:
            self.__cause__ = RemoteTraceback(traceback)


class WorkerError(WsgiPoolError):
    """A worker process misbehaved; it is killed and replaced."""


class WorkerStartError(WorkerError):
    """A worker could not be started for a reason that is not the app's (no back-off)."""


class WorkerGoneError(WorkerError):
    """The worker's pipe reached end of file."""


class RequestNotSentError(WorkerGoneError):
    """The worker was gone before any byte of the request reached it: safe to retry."""


class LeaseEndedError(WorkerError):
    """A request wrote to a worker after its lease ended (the worker may serve another)."""


class ProtocolError(WorkerError):
    """A frame from a worker could not be decoded or had the wrong shape."""


class WorkerTimeoutError(WorkerError):
    """The worker spent longer than ``timeout`` on one request."""


class RequestTimeout(TimeoutError):
    """Raised in the app's request thread once the request runs past ``timeout`` (with
    ``timeout_grace`` set), so the app's own error handling records where it was.

    Not a :class:`WsgiPoolError`: the app sees it, never the caller of the adapter (the
    client is answered 504 whatever the app does with it).
    """
