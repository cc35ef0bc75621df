"""``-c FILE``: a Python file whose module-level names are option names, as ``gunicorn.conf.py``.

The file is run once, in the front. Its values sit below the ``WSGIPOOL_*`` variables
and the flags (flags > environment > file > defaults) and are parsed and checked as a
variable would be, so a bad one names the file, the setting and what it must be. A
gunicorn setting that wsgipool spells differently is read under wsgipool's name with a
warning; one wsgipool does not have is ignored with a warning naming what to do instead.
Functions named after a server hook make the file the ``hooks`` file as well.
"""

from __future__ import annotations

import inspect
import os
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._errors import ConfigError
from .._hooks import HOOK_ARGS, HOOK_NAMES, run_file

#: gunicorn's name -> wsgipool's, for settings whose value carries over as it is.
RENAMED: Mapping[str, str] = {
    "preload_app": "preload",
    "loglevel": "log_level",
    "keepalive": "keep_alive",
    "worker_connections": "max_connections",
    "tmp_upload_dir": "buffer_dir",
    "logconfig": "log_config",  # once wsgipool has it; until then, UNSUPPORTED says so
}
#: gunicorn's settings wsgipool has no such value for, and what to use instead.
UNSUPPORTED: Mapping[str, str] = {
    "accesslog": "access_log (on or off; the lines go to stderr)",
    "errorlog": "stderr (redirect it, or let systemd or the container runtime collect it)",
    "access_log_format": "log_format and access_log_format, where available",
    "logconfig": "log_config, where available",
    "logconfig_dict": "log_config, where available",
    "logconfig_json": "log_config, where available",
    "worker_class": "none: the front is async (uvicorn) and each worker runs one request",
    "threads": "workers, or max_workers to grow the pool while requests wait",
    "post_fork": "the post_worker_init(worker) hook (with preload it runs in each fork)",
    "pre_fork": "none: workers may be spawned or forked; see post_worker_init",
    "pre_exec": "none: a reload starts new workers, not a new front",
    "worker_int": "worker_exit",
    "worker_abort": "child_exit (in the front, with the exit status)",
    "secure_scheme_headers": "proxy_headers with trusted_proxy_headers",
    "forwarder_headers": "trusted_proxy_headers",
    "proc_name": "none: process titles name the app",
    "default_proc_name": "none: process titles name the app",
    "daemon": "none: run under systemd or a container runtime",
    "pidfile": "none: run under systemd or a container runtime",
    "raw_env": "the environment of the server (worker_env limits what workers see)",
    "umask": "unix_socket_mode for the socket file",
    "initgroups": "user and group (workers drop privileges before importing the app)",
    "worker_tmp_dir": "none: workers are watched through their pipes",
    "statsd_host": "metrics (Prometheus at /-/metrics)",
    "statsd_prefix": "metrics",
    "dogstatsd_tags": "metrics",
    "syslog": "stderr, collected by journald or the container runtime",
    "syslog_addr": "stderr",
    "syslog_prefix": "stderr",
    "syslog_facility": "stderr",
    "capture_output": "none: the app's stdout already goes to stderr",
    "enable_stdio_inheritance": "none",
    "disable_redirect_access_to_syslog": "none",
    "logger_class": "logging's own configuration",
    "reload_engine": "reload (it polls)",
    "reload_extra_files": "reload (every .py file under the working directory)",
    "spew": "none",
    "check_config": "the --check-config flag",
    "print_config": "the --check-config flag",
    "wsgi_app": "the APP argument",
    "ssl_version": "none: the defaults of Python's ssl module",
    "ciphers": "none: the defaults of Python's ssl module",
    "suppress_ragged_eofs": "none",
    "do_handshake_on_connect": "none",
    "ssl_context": "certfile, keyfile, ca_certs and cert_reqs",
    "sendfile": "none: wsgi.file_wrapper is always efficient",
    "paste": "an APP that builds the Paste app",
    "raw_paste_global_conf": "none",
    "proxy_protocol": "none",
    "proxy_allow_ips": "none",
    "strip_header_spaces": "none: the HTTP parser rejects such headers",
    "permit_obsolete_folding": "none",
    "permit_unconventional_http_method": "none",
    "permit_unconventional_http_version": "none",
    "casefold_http_method": "none",
    "header_map": "none",
}


@dataclass
class FileSettings:
    """What a config file said: values by option name, and the warnings to show."""

    path: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _text(value: Any) -> str:
    """A Python value as its variable would spell it, for the option's own parser."""
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(str(item) for item in value)
    return "none" if value is None else str(value)


def takes(function: Any, count: int) -> bool:
    """Can ``function`` be called with ``count`` positional arguments?"""
    try:
        inspect.signature(function).bind(*range(count))
    except TypeError:
        return False
    except ValueError:  # no signature to read (a builtin): assume it can
        return True
    return True


def _target(
    name: str,
    names: Mapping[str, Any],
    options: Mapping[str, Any],
    warnings: list[str],
    path: str,
) -> str | None:
    """The option a file's name sets (a warning when it is gunicorn's), or None."""
    if name in options:  # ours first: a gunicorn name wsgipool has too is simply read
        return name
    target = RENAMED.get(name)
    if target is not None and target in options:
        warnings.append(f"{path}: gunicorn's {name} is read as {target}; rename it")
        return None if target in names else target  # said under our name too: that wins
    if name in UNSUPPORTED:
        warnings.append(f"{path}: gunicorn's {name} is ignored; use {UNSUPPORTED[name]}")
    elif not callable(names[name]):
        warnings.append(f"{path}: {name} is not a wsgipool setting; ignored")
    return None


def read(path: str, options: Mapping[str, Any]) -> FileSettings:
    """Run the file and read its settings; ``options`` maps names to ``Option`` objects."""
    try:
        namespace = run_file(path)
    except FileNotFoundError:
        raise ConfigError(f"--config: no such file: {path}") from None
    except Exception as exc:
        raise ConfigError(f"{path}: {type(exc).__name__}: {exc}") from exc
    found = FileSettings(os.path.abspath(path))
    names = {name: value for name, value in namespace.items()
             if not name.startswith("_") and not isinstance(value, types.ModuleType)}  # fmt: skip
    hooks = sorted(name for name in names if name in HOOK_NAMES and callable(names[name]))
    for name, value in names.items():
        if name in HOOK_NAMES:
            if callable(value) and not takes(value, HOOK_ARGS[name].count(",") + 1):
                found.warnings.append(
                    f"{path}: the {name} hook is called as {name}({HOOK_ARGS[name]})"
                )
            continue
        target = _target(name, names, options, found.warnings, path)
        if target is None:
            continue
        try:
            found.values[target] = options[target].read(_text(value))
        except ValueError as exc:
            raise ConfigError(f"{path}: {target} {exc}", option=target) from None
    if hooks and "hooks" not in found.values:
        found.values["hooks"] = found.path
    return found
