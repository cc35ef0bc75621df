"""How a WSGI app crosses into a fresh worker process.

The front turns the app into a *spec* a new interpreter can load (:func:`describe`); the
worker turns it back into the callable (:func:`load`). In order of preference:

* ``"package.module:attr.path"`` strings are passed through untouched: the front never
  imports app code;
* a callable reachable as a module attribute travels as that import path;
* a callable living in the main script travels as the script's path, which the worker
  runs under the name ``__mp_main__`` (as ``multiprocessing``'s spawn does), so the
  script's ``if __name__ == "__main__":`` block does not run again;
* anything else (closures, lambdas, apps built inside a test function) is pickled by value.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import traceback
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .._errors import AppLoadError, ConfigError

AppSpec = dict[str, Any]
_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*\Z")


def describe(app: object) -> AppSpec:
    """A msgpack-able description of ``app`` that :func:`load` can rebuild in another process."""
    if isinstance(app, str):
        if not _REF.match(app):
            raise ConfigError(f"app must look like 'package.module:attribute', got {app!r}")
        return {"kind": "import", "ref": app}
    if not callable(app):
        raise ConfigError(f"app must be a WSGI callable or an import string, got {app!r}")
    found = _find_reference(app)
    if found is not None:
        module, attr = found
        if not _is_main(module):
            return {"kind": "import", "ref": f"{module.__name__}:{attr}"}
        main_ref = _main_reference(module, attr)
        if main_ref is not None:
            return main_ref
    return _pickled(app)


def _resolve(root: object, path: str) -> object:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def _find_reference(app: object) -> tuple[ModuleType, str] | None:
    """Where ``app`` (or, for a bound method, its owner) is a module-level attribute.

    Importable modules win over the main script, which wins over nothing.
    """
    qualname = getattr(app, "__qualname__", "")
    module = sys.modules.get(getattr(app, "__module__", "") or "")
    direct = module is not None and "<" not in qualname and _reaches(module, qualname, app)
    if direct and module is not None and (_is_main(module) or _importable(module)):
        return module, qualname
    owner, suffix = app, ""
    if hasattr(app, "__self__") and hasattr(app, "__func__"):
        owner, suffix = app.__self__, "." + app.__func__.__name__
    fallback = None
    for candidate in list(sys.modules.values()):
        if not isinstance(candidate, ModuleType):
            continue
        for name, value in list(vars(candidate).items()):
            if value is owner and not name.startswith("__"):
                if not _reaches(candidate, name + suffix, app):
                    continue
                if not _is_main(candidate) and _importable(candidate):
                    return candidate, name + suffix
                if _is_main(candidate):
                    fallback = (candidate, name + suffix)
    return fallback


def _reaches(module: ModuleType, path: str, app: object) -> bool:
    try:
        target = _resolve(module, path)
    except AttributeError:
        return False
    return target is app or (hasattr(app, "__func__") and target == app)


def _is_main(module: ModuleType) -> bool:
    return module.__name__ in ("__main__", "__mp_main__")


def _importable(module: ModuleType) -> bool:
    """Would ``import module.__name__`` in a fresh interpreter find this same module?"""
    spec = getattr(module, "__spec__", None)
    if spec is None or spec.name != module.__name__:
        return False
    if "." not in spec.name and spec.origin not in (None, "built-in", "frozen"):
        try:
            found = importlib.util.find_spec(spec.name)
        except (ImportError, ValueError):
            return False
        return found is not None and found.origin == spec.origin
    return True


def _main_reference(module: ModuleType, attr: str) -> AppSpec | None:
    spec = getattr(module, "__spec__", None)
    if spec is not None and spec.name not in ("__main__", "__mp_main__"):
        return {"kind": "import", "ref": f"{spec.name}:{attr}"}  # started with `python -m`
    path = getattr(module, "__file__", None)
    if path and os.path.isfile(path):
        return {"kind": "main", "path": os.path.abspath(path), "attr": attr}
    return None


def _pickled(app: object) -> AppSpec:
    import cloudpickle

    try:
        data = cloudpickle.dumps(app)
    except Exception as exc:
        raise ConfigError(
            f"cannot send {app!r} to worker processes: it is not importable by name and "
            f"could not be pickled ({exc}); pass an import string 'module:attr' instead"
        ) from exc
    return {"kind": "pickle", "data": data}


def label(spec: AppSpec) -> str:
    """A short human name for logs and process titles."""
    if spec["kind"] == "import":
        return str(spec["ref"])
    if spec["kind"] == "main":
        return f"{os.path.basename(spec['path'])}:{spec['attr']}"
    return "<pickled app>"


def app_traceback(exc: BaseException) -> str:
    """The traceback of the app's own failure to import: the original exception, without
    wsgipool's frames or the import machinery's, so the log shows the app's code only."""
    cause = exc.__cause__ if isinstance(exc, AppLoadError) and exc.__cause__ else exc
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the package
    shown = traceback.TracebackException.from_exception(cause)
    frames = [
        frame
        for frame in shown.stack
        if not frame.filename.startswith((here, "<frozen importlib"))
        and os.path.basename(os.path.dirname(frame.filename)) != "importlib"
    ]
    shown.stack = traceback.StackSummary.from_list(frames)
    return "".join(shown.format())


def load(spec: AppSpec) -> Callable[..., Any]:
    """Rebuild the app in this (worker) process; any failure is an AppLoadError."""
    try:
        app = _load(spec)
    except AppLoadError:
        raise
    except BaseException as exc:
        raise AppLoadError(f"{type(exc).__name__}: {exc}") from exc
    if not callable(app):
        raise AppLoadError(f"{label(spec)} is not callable: {app!r}")
    return app


def _load(spec: AppSpec) -> object:
    kind = spec["kind"]
    if kind == "import":
        module_name, _, attr = str(spec["ref"]).partition(":")
        module = importlib.import_module(module_name)
        try:
            return _resolve(module, attr)
        except AttributeError as exc:
            raise AppLoadError(f"module {module_name!r} has no attribute {attr!r}") from exc
    if kind == "main":
        module = _run_main(str(spec["path"]))
        return _resolve(module, str(spec["attr"]))
    if kind == "pickle":
        import pickle

        return pickle.loads(spec["data"])
    raise AppLoadError(f"unknown app spec kind {kind!r}")


def _run_main(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("__mp_main__", path)
    if spec is None or spec.loader is None:
        raise AppLoadError(f"cannot load the main script {path!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["__mp_main__"] = sys.modules["__main__"] = module
    spec.loader.exec_module(module)
    return module
