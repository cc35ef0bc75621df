"""One frozen configuration object; each option is defined here once.

The CLI flags (``--max-requests``) and environment variables (``WSGIPOOL_MAX_REQUESTS``)
are derived from the field names and their metadata, so an option is never spelled out
twice.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._errors import ConfigError
from ._guard import Limits

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*\Z")
_OFF = {"", "none", "off", "0"}
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def parse_size(text: str | int | None) -> int | None:
    """``"512MiB"`` -> 536870912; ``None``/``"off"`` -> None."""
    if text is None or isinstance(text, int):
        return text
    if text.strip().lower() in _OFF:
        return None
    match = _SIZE.match(text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise ConfigError(f"not a size: {text!r} (use e.g. 512MiB, 2GB, 1048576)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_seconds(text: str) -> float | None:
    """``"30"`` -> 30.0; ``"none"``/``"off"`` -> None (no limit)."""
    if text.strip().lower() in ("none", "off"):
        return None
    return float(text)


def parse_names(text: str) -> tuple[str, ...]:
    """``"PATH, HOME"`` -> ``("PATH", "HOME")``."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def option(
    default: Any,
    help: str,
    parse: Callable[[str], Any] = str,
    short: str = "",
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A config field with what the CLI and the environment need to read it."""
    metadata = {"help": help, "parse": parse, "short": short}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def default_workers() -> int:
    """One worker per CPU this process may run on (the pool's work is CPU-bound Python)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass(frozen=True, kw_only=True)
class Config:
    """Pool options; every field is also a keyword of ``WsgiToAsgi``."""

    workers: int = option(
        None,
        "worker processes (default: one per CPU)",
        int,
        "-w",
        factory=lambda: default_workers(),
    )
    timeout: float | None = option(
        30.0,
        "seconds a worker may spend on one request before it is killed (504); none: off",
        parse_seconds,
        "-t",
    )
    startup_timeout: float = option(60.0, "seconds a new worker may take to import the app", float)
    graceful_timeout: float | None = option(
        30.0, "seconds in-flight requests get to finish at shutdown", parse_seconds
    )
    backlog: int = option(1024, "requests that may wait for a free worker before 503", int)
    queue_timeout: float | None = option(
        30.0, "seconds a request may wait for a free worker before 503; none: off", parse_seconds
    )
    max_body_size: int | None = option(
        None, "largest request body accepted (413 above it), e.g. 10MiB; none: off", parse_size
    )
    max_requests: int = option(0, "retire a worker after this many requests (0: never)", int)
    max_requests_jitter: int = option(0, "random 0..N added to max_requests per worker", int)
    max_lifetime: float | None = option(
        None, "retire a worker after this many seconds; none: never", parse_seconds
    )
    max_lifetime_jitter: float = option(0.0, "random 0..N seconds added to max_lifetime", float)
    max_rss: int | None = option(
        None,
        "retire a worker whose resident memory exceeds this after a request, e.g. 512MiB",
        parse_size,
    )
    max_workers: int | None = option(
        None, "grow up to this many workers while requests wait (default: workers)", int
    )
    idle_timeout: float = option(
        60.0, "seconds a worker above `workers` may stay idle before it is retired", float
    )
    user: str | None = option(None, "run workers as this user (the front must be root)", str)
    group: str | None = option(None, "run workers with this group (the front must be root)", str)
    worker_env: tuple[str, ...] | None = option(
        None,
        "comma-separated environment variables workers may see; default: all",
        parse_names,
    )
    preload: bool = option(
        False, "import the app once in a template process and fork workers from it", parse_bool
    )
    log_level: str = option(
        "info",
        "log level (critical, error, warning, info, debug) of the workers and, "
        "under `wsgipool serve`, of the front",
        str,
    )
    health: bool = option(
        False, "answer /-/healthz (the front is up) and /-/readyz (a worker is ready)", parse_bool
    )
    metrics: bool = option(
        False, "serve Prometheus metrics at metrics_path (needs prometheus-client)", parse_bool
    )
    metrics_path: str = option("/-/metrics", "path of the metrics", str)
    status: bool = option(False, "serve a status page for people at /-/status", parse_bool)
    limit_request_line: int = option(
        4094, "longest request line, in bytes (414 above it); 0: no limit", int
    )
    limit_request_fields: int = option(
        100, "most header fields in one request (431 above it); 0: no limit", int
    )
    limit_request_field_size: int = option(
        8190, "largest header field, name and value, in bytes (431 above it); 0: no limit", int
    )

    def __post_init__(self) -> None:
        checks = {
            "workers": self.workers >= 1,
            "startup_timeout": self.startup_timeout > 0,
            "backlog": self.backlog >= 0,
            "max_requests": self.max_requests >= 0,
            "max_requests_jitter": self.max_requests_jitter >= 0,
        }
        for name in ("timeout", "graceful_timeout", "queue_timeout"):
            value = getattr(self, name)
            checks[name] = value is None or value > 0
        for name in ("max_body_size", "max_rss", "max_lifetime"):
            value = getattr(self, name)
            checks[name] = value is None or value > 0
        for name in ("limit_request_line", "limit_request_fields", "limit_request_field_size"):
            checks[name] = getattr(self, name) >= 0
        checks["max_lifetime_jitter"] = self.max_lifetime_jitter >= 0
        checks["idle_timeout"] = self.idle_timeout > 0
        checks["log_level"] = self.log_level.lower() in LOG_LEVELS
        checks["metrics_path"] = self.metrics_path.startswith("/")
        if self.max_workers is None:
            object.__setattr__(self, "max_workers", self.workers)
        checks["max_workers"] = self.max_workers is not None and self.max_workers >= self.workers
        if isinstance(self.worker_env, (list, str)):
            names = self.worker_env
            object.__setattr__(
                self, "worker_env", parse_names(names) if isinstance(names, str) else tuple(names)
            )
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"invalid {name}: {getattr(self, name)!r}")

    @functools.cached_property
    def limits(self) -> Limits:
        """The header limits, for the guard and the server layer."""
        return Limits(
            self.limit_request_line, self.limit_request_fields, self.limit_request_field_size
        )

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Config:
        """Build from keyword options, naming unknown ones clearly."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
        options = dict(options)
        for name in ("max_body_size", "max_rss"):
            if isinstance(options.get(name), str):
                options[name] = parse_size(options[name])
        try:
            return cls(**options)
        except TypeError as exc:
            raise ConfigError(str(exc)) from exc


def env_name(field_name: str) -> str:
    return "WSGIPOOL_" + field_name.upper()


def cli_flag(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")
