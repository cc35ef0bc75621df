"""``wsgipool serve MODULE:APP``: a WSGI app, its pool of workers, an embedded uvicorn.

The flags and variables are read in ``parser``; here they become the app, its listening
sockets and the server, and every failure becomes an exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from .. import __version__
from .._config import Config, cli_flag, env_name
from .._cpus import usable_cpus
from .._errors import ConfigError
from .._front.adapter import WsgiToAsgi
from .._logging import configure_cli
from .._serve.access import AccessFormat, AccessLog
from .._serve.admin import AdminServer, warn_if_public
from .._serve.edge import EdgeSettings, max_connections_for, raise_open_files
from .._serve.host import Listener, ServedApp, bind, server_name
from .._serve.sockets import inherited, systemd_fds
from .._titles import front_title, set_title
from .._wire.appspec import label
from .logconfig import apply_log_config
from .parser import CERT_REQS, all_options, parse, shown

log = logging.getLogger("wsgipool.cli")

#: Exit statuses: bad usage or configuration; an address that cannot be bound; the app
#: failed to start (its own error is in the log).
EXIT_USAGE, EXIT_BIND, EXIT_STARTUP = 2, 1, 3


class Serving:
    """The app, its listening sockets and the uvicorn that serves them, ready to run."""

    def __init__(self, args: argparse.Namespace) -> None:
        try:
            import uvicorn
        except ImportError as exc:
            raise ConfigError(
                "wsgipool serve needs uvicorn: pip install 'wsgipool[serve]'"
            ) from exc
        from .._serve.protocols import protocol_class
        from .._serve.server import EdgeServer
        from .._serve.uvicorn import quiet_repeats

        if args.chdir:
            try:
                os.chdir(args.chdir)
            except OSError as exc:
                raise ConfigError(f"--chdir: {exc}") from exc
        for folder in reversed([*args.pythonpath, os.getcwd()]):  # workers inherit sys.path
            folder = os.path.abspath(folder)
            if folder in sys.path:
                sys.path.remove(folder)
            sys.path.insert(0, folder)
        if args.log_config:
            apply_log_config(args.log_config)
        configure_cli(args.log_level, args.log_format, configured=bool(args.log_config))
        for warning in args.warnings:
            log.warning("%s", warning)
        self.app = WsgiToAsgi(args.app, **pool_options(args))
        check_admin(args, self.app)
        self.access_format = AccessFormat(args.access_log_format) if args.access_log else None
        quiet_repeats()
        tls = tls_options(args)
        if args.header_timeout is not None and args.header_timeout <= 0:
            raise ConfigError(f"invalid header_timeout: {args.header_timeout}")
        self.http_parser = http_parser(args.http)
        self.listeners = listeners(args)
        self.admin: Listener | None = None
        if args.admin_bind:
            try:
                self.admin = bind(args.admin_bind)
            except OSError as exc:
                self.close()
                raise OSError(
                    exc.errno, f"cannot listen on {args.admin_bind}: {exc.strerror}"
                ) from exc
            warn_if_public(args.admin_bind)
        self.workers_from = "" if args.sources.get("workers") != "default" else usable_cpus()[1]
        config = self.app.config
        graceful = config.graceful_timeout
        self.tls = bool(tls)
        self.open_files = raise_open_files()
        self.connections = self.max_connections(args)
        self.served = ServedApp(self.app, self.banner(), args.reload)
        self.edge = EdgeSettings(
            config.limits, args.header_timeout, self.connections, self.app.refusals,
            min_upload_rate=config.min_client_rate,
        )  # fmt: skip
        self.server = EdgeServer(
            uvicorn.Config(
                self.asgi_app(args), lifespan="on", log_config=None, log_level=args.log_level,
                access_log=False, root_path=args.root_path,
                proxy_headers=False,  # the adapter applies them (proxy_headers)
                timeout_keep_alive=int(args.keep_alive),
                timeout_graceful_shutdown=None if graceful is None else math.ceil(graceful),
                http=protocol_class(self.http_parser, self.edge),
                h11_max_incomplete_event_size=self.edge.head_cap,
                **tls,
            ),
            args.header_timeout,  # a TLS handshake is bounded as a request head is
        )  # fmt: skip

    def asgi_app(self, args: argparse.Namespace) -> Any:
        """What uvicorn runs: the served app, its access log, the admin listener."""
        app: Any = self.served
        if self.access_format is not None:
            app = AccessLog(app, self.access_format, self.app.config.request_id_header)
        if self.admin is not None and self.app.observer is not None:
            app = AdminServer(app, self.admin.sock, self.app.observer)
        return app

    def max_connections(self, args: argparse.Namespace) -> int:
        """Fewer with a low descriptor limit: a connection past it would fail on accept."""
        if args.max_connections is not None:
            if args.max_connections < 1:
                raise ConfigError(f"invalid max_connections: {args.max_connections}")
            return int(args.max_connections)
        return max_connections_for(self.open_files[1], self.app.config.max_workers or 1)

    def banner(self) -> str:
        """The one line an operator reads at start: what is served, where, and how."""
        config = self.app.config
        urls = [listener.url for listener in self.listeners]
        if self.tls:
            urls = [url.replace("http://", "https://", 1) for url in urls]
        where = ", ".join(urls)
        extras = [name for name in ("health", "metrics", "status") if getattr(config, name)]
        text = f"serving {label(self.app.spec)} on {where} with {config.workers} workers"
        if self.workers_from:
            text += f" (from {self.workers_from})"
        text += f" (wsgipool {__version__}, {server_name(self.http_parser)})"
        before, after = self.open_files
        files = f"{before} raised to {after}" if after > before else str(after)
        text += f"; at most {self.connections} connections (open files: {files})"
        text += f"; /-/ endpoints: {', '.join(extras)}" if extras else ""
        return text + (f"; admin on {self.admin.url}" if self.admin is not None else "")

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (or ``server.should_exit``); the exit status."""
        try:
            with self.signals():
                self.server.run(sockets=[listener.sock for listener in self.listeners])
        except SystemExit:  # uvicorn's way of saying the lifespan startup failed
            pass
        finally:
            self.close()
        return 0 if self.server.started else EXIT_STARTUP

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        """In the main thread: name the process; SIGTERM/SIGINT stop the server even before
        uvicorn listens for them, and after (uvicorn raises them again once it is done: the
        exit stays clean); SIGHUP and SIGUSR1 are ignored until the pool is up."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        set_title(front_title(label(self.app.spec)))

        def stop(signum: int, frame: object) -> None:
            self.server.should_exit = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        for sig in (signal.SIGHUP, signal.SIGUSR1):  # their default would end the process
            previous[sig] = signal.signal(sig, signal.SIG_IGN)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def close(self) -> None:
        for listener in [*self.listeners, *([self.admin] if self.admin else [])]:
            listener.close()


def listeners(args: argparse.Namespace) -> list[Listener]:
    """Inherited sockets (``--fd``, systemd's), then the binds. With sockets handed over,
    only ``-b`` flags add more: a bind from the environment, the config file or the
    default is what the handed-over socket replaces (one environment file serves a unit
    with and without its ``.socket``)."""
    found: list[Listener] = []
    fds = [*args.fd, *systemd_fds(os.environ)]
    binds = () if fds and args.sources.get("bind") != "--bind" else args.bind
    try:
        for fd in fds:
            try:
                found.append(inherited(fd))
            except OSError as exc:
                raise ConfigError(f"--fd {fd}: {exc.strerror or exc}") from exc
        for address in binds:
            try:
                found.append(bind(address, args.reuse_port, args.unix_socket_mode))
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {address}: {exc.strerror}") from exc
    except BaseException:
        for listener in found:
            listener.close()
        raise
    return found


def pool_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keywords of ``WsgiToAsgi`` among the parsed settings (unset ones computed)."""
    names = {f.name for f in dataclasses.fields(Config)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def check_admin(args: argparse.Namespace, app: WsgiToAsgi) -> None:
    """The status page and the metrics only on the admin listener; the app's port keeps
    the probes, with bare bodies."""
    config, observer = app.config, app.observer
    if observer is not None:
        observer.private_pages = True
    if args.admin_bind and observer is None:
        raise ConfigError("--admin-bind serves the probes, --status and --metrics: turn one on")
    if (config.status or config.metrics) and not args.admin_bind:
        raise ConfigError(
            "--status and --metrics show what runs inside (pids, memory, errors), so they "
            "are served on a listener of their own: add --admin-bind 127.0.0.1:PORT "
            "(or unix:PATH)"
        )


def flag_message(exc: ConfigError, sources: dict[str, str] | None = None) -> str:
    """``workers must be ...`` -> ``--workers must be ...``, named where it was set: the
    flag, the variable or the config file."""
    text = str(exc)
    if exc.option and text.startswith(exc.option + " "):
        source = (sources or {}).get(exc.option, "default")
        if source == env_name(exc.option):
            return source + text[len(exc.option) :]
        if source not in ("default", cli_flag(exc.option)):
            return f"{source}: {text}"
        return cli_flag(exc.option) + text[len(exc.option) :]
    return text


def check_config(args: argparse.Namespace) -> int:
    """``--check-config``: every effective setting and where it came from, one a line."""
    config = Config.from_options(pool_options(args))  # checks what only the whole can
    for warning in args.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"app = {args.app}")
    if args.config:
        print(f"config = {os.path.abspath(args.config)}")
    for option in all_options():
        value = getattr(config, option.name, getattr(args, option.name))
        text = f"{value:o}" if option.name == "unix_socket_mode" else shown(value)
        source = args.sources[option.name]
        if option.name == "workers" and source == "default":
            source = f"default, from {usable_cpus()[1]}"
        print(f"{option.name} = {text}  # {source}")
    return 0


def http_parser(choice: str) -> str:
    """``auto``: httptools when it is installed (uvicorn's own choice), else h11."""
    if choice != "auto":
        return choice
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


def tls_options(args: argparse.Namespace) -> dict[str, Any]:
    """uvicorn's TLS keywords from gunicorn's flag names (nothing without ``--certfile``)."""
    if not args.certfile:
        if args.keyfile or args.ca_certs:
            raise ConfigError("--keyfile and --ca-certs need --certfile")
        return {}
    for name in ("certfile", "keyfile", "ca_certs"):
        path = getattr(args, name)
        if path and not os.path.isfile(path):
            raise ConfigError(f"--{name.replace('_', '-')}: no such file: {path}")
    if args.cert_reqs != "none" and not args.ca_certs:
        raise ConfigError("--cert-reqs optional/required needs --ca-certs")
    return {
        "ssl_certfile": args.certfile,
        "ssl_keyfile": args.keyfile or None,
        "ssl_ca_certs": args.ca_certs or None,
        "ssl_cert_reqs": CERT_REQS[args.cert_reqs],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``wsgipool ...``: the exit status (0 after a clean shutdown)."""
    args = None
    try:
        args = parse(argv)
        if args.check_config:
            return check_config(args)
        serving = Serving(args)
    except SystemExit as exc:  # argparse: --help, or a usage error it has printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except ConfigError as exc:
        sources = None if args is None else args.sources
        print(f"wsgipool: error: {flag_message(exc, sources)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"wsgipool: error: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BIND
    return serving.run()


def run() -> None:
    """The ``wsgipool`` console script."""
    sys.exit(main())
