"""``--log-config FILE``: the front's logging set up from a file, as uvicorn and gunicorn
accept one: a ``dictConfig`` as JSON (``.json``) or YAML (``.yaml``/``.yml``, with PyYAML
installed), any other file as ``logging.config.fileConfig``'s INI format.

Loggers that exist already stay enabled (``disable_existing_loggers`` is off unless the
file says otherwise): wsgipool's own are created at import, before the file is read.
"""

from __future__ import annotations

import configparser
import importlib
import json
import logging.config
import os
from typing import Any

from .._errors import ConfigError


def read_dict(path: str) -> dict[str, Any]:
    """The dictConfig of a JSON or YAML file."""
    with open(path, encoding="utf-8") as file:
        if path.endswith(".json"):
            loaded = json.load(file)
        else:
            try:
                yaml = importlib.import_module("yaml")  # optional, and untyped
            except ImportError:
                raise ConfigError(
                    f"--log-config {path}: a YAML file needs PyYAML: pip install pyyaml"
                ) from None
            try:
                loaded = yaml.safe_load(file)
            except yaml.YAMLError as exc:
                raise ConfigError(f"--log-config {path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"--log-config {path}: not a dictConfig mapping")
    loaded.setdefault("disable_existing_loggers", False)
    return loaded


def apply_log_config(path: str) -> None:
    """Configure logging from ``path``; any problem in it is a ConfigError naming it."""
    if not os.path.isfile(path):
        raise ConfigError(f"--log-config: no such file: {path}")
    try:
        if path.endswith((".json", ".yaml", ".yml")):
            logging.config.dictConfig(read_dict(path))
        else:
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except ConfigError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, ImportError, OSError,
            configparser.Error, json.JSONDecodeError) as exc:  # fmt: skip
        raise ConfigError(f"--log-config {path}: {exc}") from exc
