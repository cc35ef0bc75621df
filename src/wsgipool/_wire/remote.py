"""An exception of the app, carried from the worker to the front as itself.

Code written against asgiref catches the app's own exception class around an ASGI call
(``pytest.raises(ValueError)`` around a test client). The exception lives in another
process, so, as ``concurrent.futures.ProcessPoolExecutor`` does, the worker pickles it
and the front raises the unpickled copy with the worker's traceback, as text, for its
``__cause__``. Anything that does not survive the trip is :class:`~wsgipool.AppError`.

Unpickling runs code named by the pickle, so the front accepts only this much:

* from a worker that runs as the front's own user (one that dropped to another user is
  kept at arm's length: its ERROR frame is text only);
* classes that are exceptions, and no other callable: the containers and values of
  their arguments are built by the pickle's own opcodes (protocol 5), none of which can
  be asked for a huge allocation by a number alone;
* at most ``MAX_PICKLED`` bytes of it;
* classes of modules the front has already imported: unpickling never imports the app's
  code into the front (a test that names the class has imported it).
"""

from __future__ import annotations

import pickle
import sys
from io import BytesIO
from typing import Any

from .._errors import AppError, RemoteTraceback

#: A pickled exception larger than this travels as text only.
MAX_PICKLED = 256 * 1024


def dump(exc: BaseException) -> bytes | None:
    """The pickled exception for the ERROR frame; None when it does not pickle."""
    try:
        data = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # an argument that cannot be pickled (a socket, a lock, a lambda)
        return None
    return data if len(data) <= MAX_PICKLED else None


class _ExceptionsOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        loaded = sys.modules.get(module)
        if loaded is None:
            raise pickle.UnpicklingError(f"{module} is not imported in the front")
        found = getattr(loaded, name, None)
        if isinstance(found, type) and issubclass(found, BaseException):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not an exception")


def load(message: str, pickled: bytes | None, trusted: bool) -> Exception:
    """The exception to raise in the front for an ERROR frame: the app's own when it
    could travel, else :class:`AppError` with the same text; either way ``__cause__``
    is the worker's traceback."""
    head, _, traceback = message.partition("\n")
    found = None
    if pickled is not None and trusted and len(pickled) <= MAX_PICKLED:
        try:
            found = _ExceptionsOnly(BytesIO(pickled)).load()
        except Exception:  # a class the front lacks, an __init__ that wants other args
            found = None
    if not isinstance(found, Exception):
        lines = [line for line in traceback.splitlines() if line.strip()]
        return AppError(f"{head}: {lines[-1]}" if lines else head, traceback)
    found.__cause__ = RemoteTraceback(traceback)
    return found
