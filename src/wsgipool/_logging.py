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
"""

from __future__ import annotations

import logging

#: The front's and the workers' format, so their lines read alike.
LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"


class FallbackHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr, for as long as the root logger has no handler of its own."""

    def handle(self, record: logging.LogRecord) -> bool:
        if logging.root.handlers:
            return False  # the host decides; the record propagates to its handlers
        return bool(super().handle(record))


def _formatted(handler: logging.Handler) -> logging.Handler:
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    return handler


def install_fallback(level: str) -> None:
    """Library use: make ``wsgipool``'s lines visible at ``level``, with a timestamp,
    unless the host configured the root logger (then its handlers and levels rule).
    Handlers someone gave the ``wsgipool`` logger are kept, and get ``level`` too."""
    if logging.root.handlers:
        return
    logger = logging.getLogger("wsgipool")
    if logger.level == logging.NOTSET:
        logger.setLevel(level.upper())
    if not logger.handlers:
        logger.addHandler(_formatted(FallbackHandler()))


def configure_cli(level: str) -> None:
    """``wsgipool serve``: stderr for everything (uvicorn's loggers too) at ``level``."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(_formatted(logging.StreamHandler()))
    logging.getLogger("wsgipool").setLevel(level.upper())


def configure_worker(level: str) -> None:
    """In a worker, before the app is imported: wsgipool's own lines to stderr."""
    logger = logging.getLogger("wsgipool")
    logger.addHandler(_formatted(logging.StreamHandler()))
    logger.setLevel(level.upper())
    logger.propagate = False  # whatever the app does to the root logger, these print once


def after_app_import(level: str) -> None:
    """In a worker, once the app is imported: give the app's own lines a root handler,
    unless the app (its framework) configured logging itself."""
    for logger in [logging.getLogger("wsgipool"), *_wsgipool_children()]:
        logger.disabled = False  # dictConfig(disable_existing_loggers=True) turned it off
    if logging.root.handlers or _configured_elsewhere():
        return
    logging.root.addHandler(_formatted(logging.StreamHandler()))
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
