"""Two plain WSGI apps, each served from its own pool of workers by ``app.py``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

StartResponse = Callable[..., Any]


def _json(start_response: StartResponse, data: dict[str, object]) -> Iterable[bytes]:
    body = json.dumps(data).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def shop(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    return _json(start_response, {
        "app": "shop", "worker_pid": os.getpid(),
        "script_name": environ["SCRIPT_NAME"], "path_info": environ["PATH_INFO"],
    })  # fmt: skip


def blog(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    return _json(start_response, {
        "app": "blog", "worker_pid": os.getpid(),
        "script_name": environ["SCRIPT_NAME"], "path_info": environ["PATH_INFO"],
    })  # fmt: skip
