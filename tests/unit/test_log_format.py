"""The formatters of the front and the workers: JSON lines and text lines, with the
request's id when a line belongs to a request."""

from __future__ import annotations

import json
import logging
import sys

from wsgipool._logging import JsonFormatter, RequestIdFilter, TextFormatter, request_id


def record(message: str, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("broken\nover two lines")
        except ValueError:
            exc_info = sys.exc_info()
    made = logging.LogRecord("myapp", logging.ERROR, __file__, 1, message, (), exc_info)
    RequestIdFilter().filter(made)
    return made


def test_a_json_line_has_the_fields_and_the_traceback_as_one_field() -> None:
    token = request_id.set("abc-123")
    try:
        made = record("it failed:\ndetails", exc=True)
    finally:
        request_id.reset(token)
    line = JsonFormatter().format(made)
    assert "\n" not in line  # one object per line, whatever the message holds
    entry = json.loads(line)
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "myapp"
    assert entry["message"] == "it failed:\ndetails"
    assert entry["request_id"] == "abc-123"
    assert entry["time"].endswith("+00:00")
    assert entry["exc_info"].startswith("Traceback")
    assert "ValueError: broken\nover two lines" in entry["exc_info"]


def test_access_fields_join_the_json_line_and_lines_outside_a_request_have_no_id() -> None:
    made = record("GET / 200")
    made.access = {"path": "/", "status": 200}
    entry = json.loads(JsonFormatter().format(made))
    assert (entry["path"], entry["status"]) == ("/", 200)
    assert "request_id" not in entry


def test_a_text_line_shows_the_request_id_only_inside_a_request() -> None:
    assert "] myapp: outside" in TextFormatter().format(record("outside"))
    token = request_id.set("abc-123")
    try:
        assert "[ERROR] [abc-123] myapp: inside" in TextFormatter().format(record("inside"))
    finally:
        request_id.reset(token)
