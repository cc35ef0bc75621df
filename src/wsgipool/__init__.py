"""Serve WSGI applications from any ASGI server through a pool of worker processes."""

from ._config import Config as Config
from ._errors import (
    AppLoadError as AppLoadError,
)
from ._errors import (
    ConfigError as ConfigError,
)
from ._errors import (
    OverloadedError as OverloadedError,
)
from ._errors import (
    PoolClosedError as PoolClosedError,
)
from ._errors import (
    ProtocolError as ProtocolError,
)
from ._errors import (
    WorkerError as WorkerError,
)
from ._errors import (
    WorkerGoneError as WorkerGoneError,
)
from ._errors import (
    WorkerTimeoutError as WorkerTimeoutError,
)
from ._errors import (
    WsgiPoolError as WsgiPoolError,
)
from ._front import WsgiToAsgi as WsgiToAsgi
from ._front import WsgiToAsgiInstance as WsgiToAsgiInstance

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

# Classes report the package as their home, as the documentation names them.
for _name in __all__:
    if isinstance(globals()[_name], type):
        globals()[_name].__module__ = __name__
del _name
