"""The flags of ``wsgipool serve`` and the ``WSGIPOOL_*`` variables, read into options.

Every flag is derived from one definition: the pool's options are the fields of
:class:`~wsgipool.Config`, the server's are :data:`SERVER_OPTIONS`. Each is also read from
``WSGIPOOL_<NAME>`` in the environment, parsed by the same function; a flag wins over it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import ssl
import sys
from collections.abc import Callable, Mapping, Sequence
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
from .._serve.access import DEFAULT_FORMAT
from .._serve.edge import HEADER_TIMEOUT, MAX_CONNECTIONS
from .._serve.host import parse_binds
from .._serve.sockets import parse_fds, parse_mode
from .configfile import FileSettings, read

#: ``--cert-reqs`` choices and what they mean to ``ssl``.
CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


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


def parse_admin_bind(text: str) -> str:
    """One address, as ``--bind`` takes it; ``""``/``none``: no admin listener."""
    if text.strip().lower() in ("", "none", "off"):
        return ""
    binds = parse_binds(text)
    if len(binds) != 1:
        raise ValueError(f"one address only, got {text!r}")
    return binds[0]


SERVER_OPTIONS = (
    Option(
        "bind", ("127.0.0.1:8000",),
        "listen on HOST:PORT (:PORT for every interface) or unix:PATH; repeat for several",
        parse_binds, "-b", many=True,
    ),
    Option(
        "fd", (), "serve on this inherited listening socket (repeatable; systemd's "
        "LISTEN_FDS are picked up by themselves); no bind then unless one is given",
        parse_fds, many=True,
    ),
    Option("reuse_port", False, "set SO_REUSEPORT on the TCP sockets bound", parse_bool),
    Option(
        "unix_socket_mode", 0o666,
        "file mode of a unix:PATH socket, in octal (default: 666)", parse_mode,
    ),
    Option("root_path", "", "the path prefix a proxy serves the app under (ASGI root_path)"),
    Option("access_log", True, "log one line per request", parse_bool),
    Option(
        "access_log_format", DEFAULT_FORMAT,
        "the access line, in gunicorn's atoms: %(h)s client, %(r)s request line, %(s)s "
        "status, %(b)s bytes, %(D)s microseconds, %({header}i)s, %({header}o)s ...",
    ),
    Option(
        "log_config", "", "configure logging from this file: a dictConfig as .json or "
        ".yaml, else fileConfig's INI format",
    ),
    Option(
        "admin_bind", "", "serve /-/status, the metrics and the probes in full on this "
        "HOST:PORT or unix:PATH only (needed by --status and --metrics)", parse_admin_bind,
    ),
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
        "open connections at most; past it an idle, stalled or slow one is closed for a new "
        f"one, which gets 503 only if all do real work (default: {MAX_CONNECTIONS}, fewer if "
        "the descriptor limit is low)", int,
    ),
    Option("http", "auto", "HTTP/1.1 parser: httptools, h11, or auto (httptools if installed)",
           one_of("auto", "httptools", "h11")),
    Option("certfile", "", "serve HTTPS with this certificate (PEM; may hold the chain)"),
    Option("keyfile", "", "the private key of certfile (PEM)"),
    Option("ca_certs", "", "CA certificates (PEM) to verify client certificates with"),
    Option("cert_reqs", "none", "client certificates: none, optional or required (needs "
           "ca_certs)", one_of(*CERT_REQS)),
)  # fmt: skip
#: Where `wsgipool serve` differs from the library: it answers its probes, and as the
#: server itself it answers an app's exception with a logged 500.
#: It also gives every request an id under the usual header.
SERVE_DEFAULTS: Mapping[str, Any] = {
    "health": True,
    "app_errors": "respond",
    "request_id_header": "X-Request-ID",
}


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
    """A default as the user would type it back, for ``--help``."""
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
    """What ``--help`` shows after a flag: the kind of value, not the option's name."""
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
        previous = getattr(namespace, self.dest, self.default)
        first = previous is self.default or previous is argparse.SUPPRESS
        setattr(namespace, self.dest, values if first else previous + values)


def checked(option: Option) -> Callable[[str], Any]:
    """``option.read``, its error message shown by argparse as it is."""

    def parse_flag(text: str) -> Any:
        try:
            return option.read(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse_flag


def add_option(
    parser: Any,
    option: Option,
    environ: Mapping[str, str],
    file: Mapping[str, Any],
    suppress: bool = False,
) -> None:
    """One flag, with the variable's value (checked now), else the config file's, as its
    default: a flag wins. ``suppress``: no default at all, to tell which flags were given."""
    env = env_name(option.name)
    default = file.get(option.name, option.default)
    if env in environ:
        try:
            default = option.read(environ[env])
        except ValueError as exc:
            raise ConfigError(f"{env} {exc}") from exc
    text = option.help if "default" in option.help else f"{option.help}; default: {shown(default)}"
    kwargs: dict[str, Any] = {
        "default": argparse.SUPPRESS if suppress else default,
        "help": f"{text} [{env}]".replace("%", "%%"),
    }
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


def build_parser(
    environ: Mapping[str, str] | None = None,
    file: Mapping[str, Any] | None = None,
    suppress: bool = False,
) -> argparse.ArgumentParser:
    """The environment is read here, so a bad variable is reported before any flag."""
    environ = os.environ if environ is None else environ
    file = {} if file is None else file
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
    serve.add_argument(
        "-c", "--config", metavar="FILE", default=environ.get("WSGIPOOL_CONFIG"),
        help="a Python file setting options by name (below flags and variables), as "
        "gunicorn.conf.py; its hook functions run too [WSGIPOOL_CONFIG]",
    )  # fmt: skip
    serve.add_argument(
        "--check-config", action="store_true",
        help="print every effective setting and where it came from, then exit",
    )  # fmt: skip
    pool = serve.add_argument_group("pool options (also WsgiToAsgi keywords)")
    server = serve.add_argument_group("server options")
    names = {option.name for option in SERVER_OPTIONS}
    for option in all_options():
        add_option(server if option.name in names else pool, option, environ, file, suppress)
    return parser


def config_path(argv: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """``-c/--config FILE`` (else ``WSGIPOOL_CONFIG``), found before the other flags are
    parsed, since the file's values become their defaults."""
    early = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    early.add_argument("-c", "--config")
    known, _ = early.parse_known_args(list(argv))
    return known.config or environ.get("WSGIPOOL_CONFIG") or None


def sources(argv: Sequence[str], environ: Mapping[str, str], file: FileSettings) -> dict[str, str]:
    """Where each option's value came from: a flag, its variable, the file, the default."""
    given = vars(build_parser(environ, suppress=True).parse_known_args(argv)[0])
    found = {}
    for option in all_options():
        if option.name in given:
            found[option.name] = cli_flag(option.name)
        elif env_name(option.name) in environ:
            found[option.name] = env_name(option.name)
        elif option.name in file.values:
            found[option.name] = file.path
        else:
            found[option.name] = "default"
    return found


def parse(
    argv: Sequence[str] | None, environ: Mapping[str, str] | None = None
) -> argparse.Namespace:
    """Flags, environment and config file into a namespace (with ``sources`` and the
    file's ``warnings``); argparse exits on a usage error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ
    path = config_path(argv, environ)
    file = FileSettings()
    if path:
        file = read(path, {option.name: option for option in all_options()})
    parser = build_parser(environ, file.values)
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:
        parser.error("choose a command: wsgipool serve MODULE:APP")
    if unknown:  # said by the subcommand, whose usage lists the flags that do exist
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    args.sources = sources(argv, environ, file)
    args.warnings = file.warnings
    return args
