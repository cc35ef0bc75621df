"""Serve WSGI applications from any ASGI server through a pool of worker processes."""

from ._config import Config as Config
from ._errors import (
    AppLoadError as AppLoadError,
    ConfigError as ConfigError,
    OverloadedError as OverloadedError,
    PoolClosedError as PoolClosedError,
    ProtocolError as ProtocolError,
    WorkerError as WorkerError,
    WorkerGoneError as WorkerGoneError,
    WorkerTimeoutError as WorkerTimeoutError,
    WsgiPoolError as WsgiPoolError,
)
from ._front import WsgiToAsgi as WsgiToAsgi, WsgiToAsgiInstance as WsgiToAsgiInstance

__version__ = "0.1.0"

__all__ = (
    "AppLoadError",
    "Config",
    "ConfigError",
    "OverloadedError",
    "PoolClosedError",
    "ProtocolError",
    "WorkerError",
    "WorkerGoneError",
    "WorkerTimeoutError",
    "WsgiPoolError",
    "WsgiToAsgi",
    "WsgiToAsgiInstance",
    "__version__",
)
