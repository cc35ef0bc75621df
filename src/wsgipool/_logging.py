"""Where wsgipool's log lines go when nobody said, in the front and in the workers.

ASGI servers configure their own loggers (``uvicorn.error``, ``hypercorn.error``,
``_granian``), never the root logger, so a library's lines would reach only Python's
last-resort handler: warnings and errors without a timestamp, no INFO at all. The front
therefore gives the ``wsgipool`` logger a stderr handler that writes only while the root
logger has no handler: as soon as the host configures logging (``logging.basicConfig``,
``dictConfig`` with a root handler, pytest's capture), the lines go there instead, once.

Workers import the app, which may configure logging itself (Django does, on import):
wsgipool's worker lines get a handler of their own, and a root handler for the app's
lines is added only if the app set up none of its own.

Both write text (:data:`LOG_FORMAT`) or, with ``log_format="json"``, one JSON object per
line, so that a log shipper reads every line of the process without a parser of ours.
A line logged while a request runs carries that request's id (:data:`request_id`, set
by the front around each request and by the worker while the app runs).
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import re
from typing import Any

#: The front's and the workers' format, so their lines read alike.
LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
#: The same, for a line logged while a request runs: its id after the level.
REQUEST_FORMAT = (
    "[%(asctime)s] [%(process)d] [%(levelname)s] [%(request_id)s] %(name)s: %(message)s"
)
LOG_FORMATS = ("text", "json")

#: The id of the request this task (front) or this worker is serving, if any.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "wsgipool_request_id", default=None
)


class RequestIdFilter(logging.Filter):
    """Stamps ``record.request_id`` (None outside a request) for formatters to show."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        return True


class TextFormatter(logging.Formatter):
    """:data:`LOG_FORMAT`, with the request's id when the line belongs to a request."""

    def __init__(self) -> None:
        super().__init__(LOG_FORMAT)
        self.in_request = logging.Formatter(REQUEST_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is not None:
            return self.in_request.format(record)
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, pid, message,
    request_id inside a request, the traceback as ``exc_info``, and the fields an access
    line carries (``record.access``). Newlines stay inside the JSON strings."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        entry: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid is not None:
            entry["request_id"] = rid
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            entry.update(access)
        return json.dumps(entry, default=str)


def formatter(log_format: str = "text") -> logging.Formatter:
    """The formatter of ``log_format`` (``text`` or ``json``)."""
    return JsonFormatter() if log_format == "json" else TextFormatter()


def stamp_request_ids() -> None:
    """Every record made in this process gets ``request_id``, whatever handler or format
    (a ``--log-config`` may use ``%(request_id)s``). For processes wsgipool owns: the
    ``wsgipool serve`` front and the workers."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "stamps_request_ids", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = request_id.get()
        return record

    factory.stamps_request_ids = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class FallbackHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr, for as long as the root logger has no handler of its own."""

    def handle(self, record: logging.LogRecord) -> bool:
        if logging.root.handlers:
            return False  # the host decides; the record propagates to its handlers
        return bool(super().handle(record))


def _formatted(handler: logging.Handler, log_format: str = "text") -> logging.Handler:
    if log_format == "json":
        logging.captureWarnings(True)  # a warning would otherwise be a line of plain text
    handler.setFormatter(formatter(log_format))
    handler.addFilter(RequestIdFilter())
    return handler


def install_fallback(level: str, log_format: str = "text") -> None:
    """Library use: make ``wsgipool``'s lines visible at ``level``, with a timestamp,
    unless the host configured the root logger (then its handlers and levels rule).
    Handlers someone gave the ``wsgipool`` logger are kept, and get ``level`` too."""
    if logging.root.handlers:
        return
    logger = logging.getLogger("wsgipool")
    if logger.level == logging.NOTSET:
        logger.setLevel(level.upper())
    if not logger.handlers:
        logger.addHandler(_formatted(FallbackHandler(), log_format))


def configure_cli(level: str, log_format: str = "text", configured: bool = False) -> None:
    """``wsgipool serve``: stderr for everything (uvicorn's loggers too) at ``level``;
    ``configured``: a ``--log-config`` set the handlers, and the levels it gave rule."""
    stamp_request_ids()
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(_formatted(logging.StreamHandler(), log_format))
    logger = logging.getLogger("wsgipool")
    if not configured or logger.level == logging.NOTSET:
        logger.setLevel(level.upper())


def configure_worker(level: str, log_format: str = "text") -> None:
    """In a worker, before the app is imported: wsgipool's own lines to stderr."""
    stamp_request_ids()
    logger = logging.getLogger("wsgipool")
    logger.addHandler(_formatted(logging.StreamHandler(), log_format))
    logger.setLevel(level.upper())
    logger.propagate = False  # whatever the app does to the root logger, these print once


def after_app_import(level: str, log_format: str = "text") -> None:
    """In a worker, once the app is imported: give the app's own lines a root handler,
    unless the app (its framework) configured logging itself."""
    for logger in [logging.getLogger("wsgipool"), *_wsgipool_children()]:
        logger.disabled = False  # dictConfig(disable_existing_loggers=True) turned it off
    if logging.root.handlers or _configured_elsewhere():
        return
    logging.root.addHandler(_formatted(logging.StreamHandler(), log_format))
    logging.root.setLevel(level.upper())


def _wsgipool_children() -> list[logging.Logger]:
    return [
        logger
        for name, logger in logging.Logger.manager.loggerDict.items()
        if name.startswith("wsgipool.") and isinstance(logger, logging.Logger)
    ]


def _configured_elsewhere() -> bool:
    """Has a logger outside wsgipool got a real handler (e.g. Django's ``django``)?

    A ``NullHandler`` does not count: libraries add one to stay quiet by default.
    """
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if name == "wsgipool" or name.startswith("wsgipool."):
            continue
        if isinstance(logger, logging.Logger) and any(
            not isinstance(handler, logging.NullHandler) for handler in logger.handlers
        ):
            return True
    return False


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def printable(text: str) -> str:
    """``text`` with control characters as ``\\xHH`` (as nginx logs them): a value from a
    client (a decoded path, a header) must not start a line of its own in a text log."""
    if text.isprintable():
        return text
    return _UNPRINTABLE.sub(lambda found: f"\\x{ord(found.group()):02x}", text)
