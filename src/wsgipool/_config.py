"""One frozen configuration object; each option is defined here once.

The CLI flags (``--max-requests``) and environment variables (``WSGIPOOL_MAX_REQUESTS``)
are derived from the field names and their metadata, so an option is never spelled out
twice.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._cpus import usable_cpus
from ._errors import ConfigError
from ._front.guard import Limits
from ._front.proxy import Proxies

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
        raise ConfigError(f"must be a size such as 512MiB, 2GB or 1048576, got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_int(text: str) -> int:
    """``"4"`` -> 4, with a message for people instead of ``int()``'s."""
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"must be a whole number, got {text!r}") from None


def parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"must be a number of seconds, got {text!r}") from None


def parse_seconds(text: str) -> float | None:
    """``"30"`` -> 30.0; ``"none"``/``"off"`` -> None (no limit)."""
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"must be a number of seconds or none, got {text!r}") from None


def parse_level(text: str) -> str:
    """A logging level name, checked against :data:`LOG_LEVELS`."""
    if text.strip().lower() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return text.strip().lower()


def parse_header_name(text: str) -> str:
    """``"X-Request-ID"``; ``"none"``/``"off"`` -> ``""`` (the feature is off)."""
    return "" if text.strip().lower() in _OFF else text.strip()


def parse_names(text: str) -> tuple[str, ...]:
    """``"PATH, HOME"`` -> ``("PATH", "HOME")``."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"must be true or false, got {text!r}")


@dataclass(frozen=True)
class Rule:
    """What a valid value is, said as in ``workers must be at least 1, got 0``."""

    text: str
    ok: Callable[[Any], bool]

    def problem(self, value: Any) -> str | None:
        """``"must be at least 1, got 0"``, or None when ``value`` is valid."""
        try:
            valid = self.ok(value)
        except (TypeError, AttributeError):  # e.g. a string given for a number
            valid = False
        return None if valid else f"must be {self.text}, got {value!r}"

    def check(self, name: str, value: Any) -> None:
        problem = self.problem(value)
        if problem is not None:
            raise ConfigError(f"{name} {problem}", option=name)


AT_LEAST_0 = Rule("at least 0", lambda v: v >= 0)
AT_LEAST_1 = Rule("at least 1", lambda v: v >= 1)
POSITIVE = Rule("more than 0", lambda v: v > 0)
POSITIVE_OR_NONE = Rule("more than 0, or none", lambda v: v is None or v > 0)
LEVEL = Rule(f"one of {', '.join(LOG_LEVELS)}", lambda v: v.lower() in LOG_LEVELS)
PATH = Rule("a path starting with '/'", lambda v: v.startswith("/"))
AT_LEAST_0_OR_NONE = Rule("at least 0, or none", lambda v: v is None or v >= 0)
APP_ERRORS = Rule("raise or respond", lambda v: v in ("raise", "respond"))
LOG_FORMAT = Rule("text or json", lambda v: v in ("text", "json"))
HEADER_NAME = Rule(
    "a header name (letters, digits, '-'), or none",
    lambda v: v == "" or re.fullmatch(r"[A-Za-z0-9-]{1,64}", v) is not None,
)


def option(
    default: Any,
    help: str,
    parse: Callable[[str], Any] = str,
    short: str = "",
    factory: Callable[[], Any] | None = None,
    rule: Rule | None = None,
) -> Any:
    """A config field with what the CLI and the environment need to read and check it."""
    metadata = {"help": help, "parse": parse, "short": short, "rule": rule}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def default_workers() -> int:
    """One worker per CPU this process may use (the pool's work is CPU-bound Python):
    the cgroup CPU quota if there is one, else the CPU affinity."""
    return usable_cpus()[0]


@dataclass(frozen=True, kw_only=True)
class Config:
    """Pool options; every field is also a keyword of ``WsgiToAsgi``."""

    workers: int = option(
        None,
        "worker processes, counting the CPUs of the cgroup CPU quota, else of the affinity "
        "(default: one per CPU)",
        parse_int,
        "-w",
        factory=lambda: default_workers(),
        rule=AT_LEAST_1,
    )
    timeout: float | None = option(
        30.0,
        "seconds a worker may spend on one request before it is killed (504); none: off",
        parse_seconds,
        "-t",
        rule=POSITIVE_OR_NONE,
    )
    timeout_grace: float | None = option(
        None,
        "with it, a request past timeout is first interrupted: the app gets "
        "wsgipool.RequestTimeout raised in it, and the worker is killed only if the app has "
        "not finished this many seconds later (the client gets 504 either way); none: off",
        parse_seconds,
        rule=POSITIVE_OR_NONE,
    )
    slow_request: float | None = option(
        None,
        "log the stacks of a request still running after this many seconds, once, and let "
        "it go on; none: off",
        parse_seconds,
        rule=POSITIVE_OR_NONE,
    )
    startup_timeout: float = option(
        60.0, "seconds a new worker may take to import the app", parse_float, rule=POSITIVE
    )
    abort_grace: float = option(
        5.0,
        "seconds a worker gets to stop a response after its client went away",
        parse_float,
        rule=POSITIVE,
    )
    graceful_timeout: float | None = option(
        30.0,
        "seconds in-flight requests get to finish at shutdown",
        parse_seconds,
        rule=POSITIVE_OR_NONE,
    )
    backlog: int = option(
        1024, "requests that may wait for a free worker before 503", parse_int, rule=AT_LEAST_0
    )
    queue_timeout: float | None = option(
        30.0,
        "seconds a request may wait for a free worker before 503; none: off",
        parse_seconds,
        rule=POSITIVE_OR_NONE,
    )
    max_body_size: int | None = option(
        None,
        "largest request body accepted (413 above it), e.g. 10MiB; none: off",
        parse_size,
        rule=POSITIVE_OR_NONE,
    )
    max_requests: int = option(
        0, "retire a worker after this many requests (0: never)", parse_int, rule=AT_LEAST_0
    )
    max_requests_jitter: int = option(
        0, "random 0..N added to max_requests per worker", parse_int, rule=AT_LEAST_0
    )
    buffer_requests: bool = option(
        True,
        "read each request body before a worker is taken (off: stream it to the app as it arrives)",
        parse_bool,
    )
    max_response_buffer: int | None = option(
        1024**3,
        "bytes of one response the front holds for a slow client, so its worker is free at "
        "once; past it the worker waits for the client; none: hold nothing",
        parse_size,
        rule=AT_LEAST_0_OR_NONE,
    )
    buffer_memory: int | None = option(
        32 * 1024**2,
        "bytes of bodies the front holds in memory across all requests; beyond it they go "
        "to unlinked temporary files",
        parse_size,
        rule=AT_LEAST_0_OR_NONE,
    )
    buffer_disk: int | None = option(
        1024**3,
        "bytes of bodies the front holds in temporary files across all requests (at most "
        "half the free space of buffer_dir at start); past it the response whose client is "
        "furthest behind is cut off; none: no bound",
        parse_size,
        rule=AT_LEAST_0_OR_NONE,
    )
    buffer_dir: str | None = option(
        None, "directory of the temporary files (default: the system's temp dir)", str
    )
    client_timeout: float = option(
        30.0,
        "seconds a client may go without sending a byte of its body, or taking a byte of a "
        "streamed response, before 408 or disconnect",
        parse_float,
        rule=POSITIVE,
    )
    min_client_rate: int = option(
        240,
        "bytes/s a client must keep up, sending its body or reading a streamed response, once "
        "client_rate_grace has passed (0: no minimum)",
        parse_int,
        rule=AT_LEAST_0,
    )
    client_rate_grace: float = option(
        5.0,
        "seconds of a body or response before min_client_rate applies",
        parse_float,
        rule=AT_LEAST_0,
    )
    app_errors: str = option(
        "raise",
        "an exception of the app: raise it from the ASGI call, as asgiref does, so the "
        "server and ASGI middleware see it (raise), or log it and answer 500 (respond)",
        str,
        rule=APP_ERRORS,
    )
    max_lifetime: float | None = option(
        None,
        "retire a worker after this many seconds; none: never",
        parse_seconds,
        rule=POSITIVE_OR_NONE,
    )
    max_lifetime_jitter: float = option(
        0.0, "random 0..N seconds added to max_lifetime", parse_float, rule=AT_LEAST_0
    )
    max_rss: int | None = option(
        None,
        "retire a worker whose resident memory exceeds this after a request, e.g. 512MiB",
        parse_size,
        rule=POSITIVE_OR_NONE,
    )
    max_workers: int | None = option(
        None, "grow up to this many workers while requests wait (default: workers)", parse_int
    )
    idle_timeout: float = option(
        60.0,
        "seconds a worker above `workers` may stay idle before it is retired",
        parse_float,
        rule=POSITIVE,
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
        f"log level ({', '.join(LOG_LEVELS)}) of the workers and of wsgipool's own lines "
        "in the front",
        parse_level,
        rule=LEVEL,
    )
    hooks: str | None = option(
        None,
        "a Python file whose functions named after server hooks (on_starting, "
        "post_worker_init, pre_request, ...) run at those points (default: the config "
        "file, when it defines any)",
        str,
    )
    proxy_headers: bool = option(
        False,
        "apply Forwarded and X-Forwarded-* from the proxies in forwarded_allow_ips (and "
        "remove them from other peers' requests)",
        parse_bool,
    )
    forwarded_allow_ips: tuple[str, ...] = option(
        ("127.0.0.1", "::1", "unix"),
        "comma-separated addresses and networks (10.0.0.0/8) of trusted proxies; unix: a "
        "unix-socket peer; *: any",
        parse_names,
    )
    proxy_hops: int = option(
        1, "trusted proxies in a chain in front of the server", parse_int, rule=AT_LEAST_1
    )
    trusted_proxy_headers: tuple[str, ...] = option(
        ("x-forwarded-for", "x-forwarded-proto"),
        "the proxy headers applied: some of forwarded, x-forwarded-for, x-forwarded-proto, "
        "x-forwarded-host, x-forwarded-port, x-forwarded-prefix",
        parse_names,
    )
    log_format: str = option(
        "text",
        "text, or json: one JSON object per line (time, level, logger, pid, message, "
        "request_id), from the front and the workers",
        str,
        rule=LOG_FORMAT,
    )
    request_id_header: str = option(
        "",
        "take each request's id from this header (a new one if absent or unsafe), give it "
        "to the app, echo it on the response and put it on the request's log lines; "
        "none: off",
        parse_header_name,
        rule=HEADER_NAME,
    )
    health: bool = option(
        False, "answer /-/healthz (the front is up) and /-/readyz (a worker is ready)", parse_bool
    )
    metrics: bool = option(
        False, "serve Prometheus metrics at metrics_path (needs prometheus-client)", parse_bool
    )
    metrics_path: str = option("/-/metrics", "path of the metrics", str, rule=PATH)
    status: bool = option(False, "serve a status page for people at /-/status", parse_bool)
    limit_request_line: int = option(
        4094,
        "longest request line, in bytes (414 above it); 0: no limit",
        parse_int,
        rule=AT_LEAST_0,
    )
    limit_request_fields: int = option(
        100,
        "most header fields in one request (431 above it); 0: no limit",
        parse_int,
        rule=AT_LEAST_0,
    )
    limit_request_field_size: int = option(
        8190,
        "largest header field, name and value, in bytes (431 above it); 0: no limit",
        parse_int,
        rule=AT_LEAST_0,
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            rule: Rule | None = f.metadata["rule"]
            if rule is not None:
                rule.check(f.name, getattr(self, f.name))
        if self.max_workers is None:
            object.__setattr__(self, "max_workers", self.workers)
        Rule(f"at least workers ({self.workers})", lambda v: v >= self.workers).check(
            "max_workers", self.max_workers
        )
        for name in ("worker_env", "forwarded_allow_ips", "trusted_proxy_headers"):
            names = getattr(self, name)
            if isinstance(names, (list, str)):
                object.__setattr__(
                    self, name, parse_names(names) if isinstance(names, str) else tuple(names)
                )
        self.proxies()  # raises on an entry that is not an address or a header name

    def proxies(self) -> Proxies:
        """Which peers' proxy headers are applied, and which of them."""
        return Proxies(self.proxy_headers, self.forwarded_allow_ips, self.proxy_hops,
                       self.trusted_proxy_headers)  # fmt: skip

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
        for name in ("max_body_size", "max_rss", "buffer_memory", "buffer_disk",
                     "max_response_buffer"):  # fmt: skip
            if isinstance(options.get(name), str):
                try:
                    options[name] = parse_size(options[name])
                except ConfigError as exc:
                    raise ConfigError(f"{name} {exc}", option=name) from None
        try:
            return cls(**options)
        except TypeError as exc:
            raise ConfigError(str(exc)) from exc


def env_name(field_name: str) -> str:
    return "WSGIPOOL_" + field_name.upper()


def cli_flag(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")
