"""Exceptions raised by wsgipool.

WsgiPoolError
├── ConfigError          bad option or app reference, found at construction time
├── AppLoadError         the worker could not import or unpickle the app
├── PoolClosedError      a request arrived after shutdown began
├── OverloadedError      the wait queue is full or the wait took too long
└── WorkerError          a worker broke its side of the channel
    ├── WorkerGoneError  the worker's pipe closed (it exited or was killed)
    ├── WorkerTimeoutError  the worker held one request longer than ``timeout``
    └── ProtocolError    the worker sent a malformed or oversized frame
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
    """A worker failed to load the WSGI application; the message is the app's own error."""


class PoolClosedError(WsgiPoolError):
    """The pool is shutting down and takes no new requests."""


class OverloadedError(WsgiPoolError):
    """No worker became free within the queue limits."""


class WorkerError(WsgiPoolError):
    """A worker process misbehaved; it is killed and replaced."""


class WorkerGoneError(WorkerError):
    """The worker's pipe reached end of file."""

    #: Set when a write failed before any of its bytes reached the worker.
    nothing_sent = False


class ProtocolError(WorkerError):
    """A frame from a worker could not be decoded or had the wrong shape."""


class WorkerTimeoutError(WorkerError):
    """The worker spent longer than ``timeout`` on one request."""
