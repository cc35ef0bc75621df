"""``wsgipool serve MODULE:APP``: a WSGI app, its pool of workers, an embedded uvicorn.

Every flag is derived from one definition: the pool's options are the fields of
:class:`~wsgipool.Config`, the server's are :data:`SERVER_OPTIONS`. Each is also read from
``WSGIPOOL_<NAME>`` in the environment, parsed by the same function; a flag wins over it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import math
import os
import re
import resource
import signal
import ssl
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import __version__
from .._config import (
    Config,
    Rule,
    cli_flag,
    env_name,
    parse_bool,
    parse_float,
    parse_int,
    parse_level,
    parse_names,
    parse_seconds,
    parse_size,
)
from .._errors import ConfigError
from .._front.adapter import WsgiToAsgi
from .._logging import configure_cli
from .._serve.edge import HEADER_TIMEOUT, MAX_CONNECTIONS, EdgeSettings, max_connections_for
from .._serve.host import Listener, ServedApp, bind, parse_binds, server_name
from .._titles import front_title, set_title
from .._wire.appspec import label

CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
#: Exit statuses: bad usage or configuration; an address that cannot be bound; the app
#: failed to start (its own error is in the log).
EXIT_USAGE, EXIT_BIND, EXIT_STARTUP = 2, 1, 3


@dataclass(frozen=True)
class Option:
    """One setting: a flag (``--name``, maybe a short one) and ``WSGIPOOL_NAME``."""

    name: str
    default: Any
    help: str
    parse: Callable[[str], Any] = str
    short: str = ""
    many: bool = False  # the flag may be repeated; the variable may list several
    rule: Rule | None = None

    def read(self, text: str) -> Any:
        """Parse and check one value; a ValueError says ``must be ..., got ...``."""
        value = self.parse(text)
        problem = None if self.rule is None else self.rule.problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


def one_of(*choices: str) -> Callable[[str], str]:
    """A parser that accepts ``choices`` alone."""
    named = f"{', '.join(choices[:-1])} or {choices[-1]}"

    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"not {named}: {text!r}")
        return text

    return parse


SERVER_OPTIONS = (
    Option(
        "bind", ("127.0.0.1:8000",),
        "listen on HOST:PORT (:PORT for every interface) or unix:PATH; repeat for several",
        parse_binds, "-b", many=True,
    ),
    Option("root_path", "", "the path prefix a proxy serves the app under (ASGI root_path)"),
    Option(
        "proxy_headers", False,
        "trust X-Forwarded-For/-Proto from the addresses in forwarded_allow_ips", parse_bool,
    ),
    Option(
        "forwarded_allow_ips", "127.0.0.1",
        "comma-separated proxy addresses whose X-Forwarded-* headers count ('*': any)",
    ),
    Option("access_log", True, "log one line per request", parse_bool),
    Option("keep_alive", 5.0, "seconds an idle keep-alive connection stays open", parse_float),
    Option(
        "reload", False, "development: rolling restart of the workers when a .py file under "
        "the working directory changes", parse_bool,
    ),
    Option("chdir", "", "change to this directory before loading the app"),
    Option("pythonpath", (), "comma-separated directories to put first on sys.path", parse_names),
    Option(
        "header_timeout", HEADER_TIMEOUT,
        "seconds a connection gets to send a complete request head before it is closed "
        "(408); none: off", parse_seconds,
    ),
    Option(
        "max_connections", None,
        f"open connections at most; past it a new one gets 503 (default: {MAX_CONNECTIONS}, "
        "fewer if the descriptor limit is low)", int,
    ),
    Option("http", "auto", "HTTP/1.1 parser: httptools, h11, or auto (httptools if installed)",
           one_of("auto", "httptools", "h11")),
    Option("certfile", "", "serve HTTPS with this certificate (PEM; may hold the chain)"),
    Option("keyfile", "", "the private key of certfile (PEM)"),
    Option("ca_certs", "", "CA certificates (PEM) to verify client certificates with"),
    Option("cert_reqs", "none", "client certificates: none, optional or required (needs "
           "ca_certs)", one_of(*CERT_REQS)),
)  # fmt: skip
#: Where ``wsgipool serve`` departs from the library's defaults.
#: Where `wsgipool serve` differs from the library: it answers its probes, and as the
#: server itself it answers an app's exception with a logged 500.
SERVE_DEFAULTS: Mapping[str, Any] = {"health": True, "app_errors": "respond"}


def all_options() -> list[Option]:
    """The pool's options (from :class:`Config`), then the server's."""
    options = []
    for f in dataclasses.fields(Config):
        default = None if f.default is dataclasses.MISSING else f.default  # None: computed
        default = SERVE_DEFAULTS.get(f.name, default)
        meta = f.metadata
        options.append(
            Option(f.name, default, meta["help"], meta["parse"], meta["short"], rule=meta["rule"])
        )
    return [*options, *SERVER_OPTIONS]


def shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) or "none"


def metavar(option: Option) -> str:
    kinds: dict[Callable[..., Any], str] = {
        parse_int: "N",
        parse_float: "SECONDS",
        parse_seconds: "SECONDS",
        parse_size: "SIZE",
        parse_level: "LEVEL",
    }
    return kinds.get(option.parse, option.name.upper())


class Switch(argparse.Action):
    """``--name`` sets True, ``--no-name`` sets False."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: str | None = None) -> None:
        setattr(namespace, self.dest, not (option or "").startswith("--no-"))


class Many(argparse.Action):
    """A repeatable flag: its first use replaces the default, later ones add to it."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: str | None = None) -> None:
        previous = getattr(namespace, self.dest)
        setattr(namespace, self.dest, values if previous is self.default else previous + values)


def checked(option: Option) -> Callable[[str], Any]:
    """``option.read``, its error message shown by argparse as it is."""

    def parse_flag(text: str) -> Any:
        try:
            return option.read(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse_flag


def add_option(parser: Any, option: Option, environ: Mapping[str, str]) -> None:
    env = env_name(option.name)
    default = option.default
    if env in environ:
        try:
            default = option.read(environ[env])
        except ValueError as exc:
            raise ConfigError(f"{env} {exc}") from exc
    text = option.help if "default" in option.help else f"{option.help}; default: {shown(default)}"
    kwargs: dict[str, Any] = {"default": default, "help": f"{text} [{env}]".replace("%", "%%")}
    flags = [*([option.short] if option.short else []), cli_flag(option.name)]
    if option.parse is parse_bool:
        flags.append("--no-" + option.name.replace("_", "-"))
        kwargs.update(action=Switch, nargs=0)
    elif option.many:
        kwargs.update(action=Many, type=checked(option), metavar=metavar(option))
    else:
        kwargs.update(type=checked(option), metavar=metavar(option))
    parser.add_argument(*flags, dest=option.name, **kwargs)


#: argparse's ``argument -w/--workers: must be ...``, said as ``--workers must be ...``.
_BAD_VALUE = re.compile(r"argument (?:-\w/)?(--[\w-]+): (must .*)", re.DOTALL)


class Parser(argparse.ArgumentParser):
    """argparse, with value errors that start with the flag they are about."""

    def error(self, message: str) -> Any:
        match = _BAD_VALUE.fullmatch(message)
        super().error(f"{match[1]} {match[2]}" if match else message)


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    environ = os.environ if environ is None else environ
    parser = Parser(
        prog="wsgipool", description="Serve a WSGI app from a pool of worker processes."
    )
    parser.add_argument("--version", action="version", version=f"wsgipool {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    serve = commands.add_parser(
        "serve",
        help="serve a WSGI app on uvicorn",
        description="Serve a WSGI app through a pool of worker processes on uvicorn. "
        "Every option is also read from the environment variable in brackets.",
    )
    serve.add_argument("app", help="the WSGI app as MODULE:ATTRIBUTE, e.g. mysite.wsgi:application")
    pool = serve.add_argument_group("pool options (also WsgiToAsgi keywords)")
    server = serve.add_argument_group("server options")
    names = {option.name for option in SERVER_OPTIONS}
    for option in all_options():
        add_option(server if option.name in names else pool, option, environ)
    return parser


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:
        parser.error("choose a command: wsgipool serve MODULE:APP")
    if unknown:  # said by the subcommand, whose usage lists the flags that do exist
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


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
        names = {f.name for f in dataclasses.fields(Config)}
        options = {k: v for k, v in vars(args).items() if k in names and v is not None}
        configure_cli(args.log_level)
        self.app = WsgiToAsgi(args.app, **options)
        quiet_repeats()
        tls = tls_options(args)
        if args.header_timeout is not None and args.header_timeout <= 0:
            raise ConfigError(f"invalid header_timeout: {args.header_timeout}")
        self.parser = parser_of(args.http)
        self.listeners: list[Listener] = []
        for address in args.bind:
            try:
                self.listeners.append(bind(address))
            except OSError as exc:
                self.close()
                raise OSError(exc.errno, f"cannot listen on {address}: {exc.strerror}") from exc
        config = self.app.config
        graceful = config.graceful_timeout
        self.tls = bool(tls)
        self.served = ServedApp(self.app, self.banner(), args.reload)
        self.edge = EdgeSettings(
            config.limits, args.header_timeout, self.max_connections(args), self.app.refusals
        )
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.served, lifespan="on", log_config=None, log_level=args.log_level,
                access_log=args.access_log, root_path=args.root_path,
                proxy_headers=args.proxy_headers, forwarded_allow_ips=args.forwarded_allow_ips,
                timeout_keep_alive=int(args.keep_alive),
                timeout_graceful_shutdown=None if graceful is None else math.ceil(graceful),
                http=protocol_class(self.parser, self.edge),
                h11_max_incomplete_event_size=self.edge.head_cap,
                **tls,
            )
        )  # fmt: skip

    def max_connections(self, args: argparse.Namespace) -> int:
        if args.max_connections is not None:
            if args.max_connections < 1:
                raise ConfigError(f"invalid max_connections: {args.max_connections}")
            return int(args.max_connections)
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        open_files = MAX_CONNECTIONS * 2 if soft == resource.RLIM_INFINITY else soft
        return max_connections_for(open_files, self.app.config.max_workers or 1)

    def banner(self) -> str:
        config = self.app.config
        urls = [listener.url for listener in self.listeners]
        if self.tls:
            urls = [url.replace("http://", "https://", 1) for url in urls]
        where = ", ".join(urls)
        extras = [name for name in ("health", "metrics", "status") if getattr(config, name)]
        text = f"serving {label(self.app.spec)} on {where} with {config.workers} workers"
        text += f" (wsgipool {__version__}, {server_name(self.parser)})"
        return text + (f"; /-/ endpoints: {', '.join(extras)}" if extras else "")

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
        exit stays clean); SIGHUP is ignored until the pool is up to be restarted."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        set_title(front_title(label(self.app.spec)))

        def stop(signum: int, frame: object) -> None:
            self.server.should_exit = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()


def flag_message(exc: ConfigError) -> str:
    """``workers must be ...`` -> ``--workers must be ...``: on the command line, the flag."""
    text = str(exc)
    if exc.option and text.startswith(exc.option + " "):
        return cli_flag(exc.option) + text[len(exc.option) :]
    return text


def parser_of(choice: str) -> str:
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
    try:
        serving = Serving(parse(argv))
    except SystemExit as exc:  # argparse: --help, or a usage error it has printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except ConfigError as exc:
        print(f"wsgipool: error: {flag_message(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"wsgipool: error: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BIND
    return serving.run()


def run() -> None:
    """The ``wsgipool`` console script."""
    sys.exit(main())
