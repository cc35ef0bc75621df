"""Serve WSGI applications from any ASGI server through a pool of worker processes.

The front's names load on first use (PEP 562), so a worker process, which starts as
``python -m wsgipool._worker``, imports only the worker's own modules: no anyio, no
asyncio, none of the front.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import (
    AppError,
    AppLoadError,
    ConfigError,
    OverloadedError,
    PoolClosedError,
    ProtocolError,
    RemoteTraceback,
    RequestNotSentError,
    RequestTimeout,
    WorkerError,
    WorkerGoneError,
    WorkerStartError,
    WorkerTimeoutError,
    WsgiPoolError,
)

if TYPE_CHECKING:
    from ._config import Config as Config
    from ._front.adapter import WsgiToAsgi as WsgiToAsgi
    from ._front.adapter import WsgiToAsgiInstance as WsgiToAsgiInstance
    from ._pool.stats import PoolStats as PoolStats
    from ._pool.stats import WorkerInfo as WorkerInfo

__version__ = "0.1.0"

_LAZY = {
    "Config": "._config",
    "PoolStats": "._pool.stats",
    "WorkerInfo": "._pool.stats",
    "WsgiToAsgi": "._front.adapter",
    "WsgiToAsgiInstance": "._front.adapter",
}

__all__ = (
    "AppError",
    "AppLoadError",
    "Config",
    "ConfigError",
    "OverloadedError",
    "PoolClosedError",
    "PoolStats",
    "ProtocolError",
    "RemoteTraceback",
    "RequestNotSentError",
    "RequestTimeout",
    "WorkerError",
    "WorkerGoneError",
    "WorkerInfo",
    "WorkerStartError",
    "WorkerTimeoutError",
    "WsgiPoolError",
    "WsgiToAsgi",
    "WsgiToAsgiInstance",
    "__version__",
)


def _home(value: Any) -> Any:
    """Classes report the package as their home, as the documentation names them."""
    if isinstance(value, type):
        value.__module__ = __name__
    return value


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = _home(getattr(importlib.import_module(module, __name__), name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return list(__all__)


for _name in __all__:
    if _name in globals():
        _home(globals()[_name])
del _name
