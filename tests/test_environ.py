"""Scope -> environ (PEP 3333, ASGI HTTP spec), through the public ``build_environ``."""

from __future__ import annotations

import io
import sys
from typing import Any

import pytest

from asgi_helpers import http_scope
from wsgipool import WsgiToAsgiInstance


def environ(**scope: Any) -> dict[str, Any]:
    return WsgiToAsgiInstance(None).build_environ(http_scope(**scope), io.BytesIO(b"body"))


def test_root_path_is_stripped_only_at_a_segment_boundary() -> None:
    env = environ(path="/app/x", root_path="/app")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/x")
    env = environ(path="/application", root_path="/app")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/application")
    env = environ(path="/app", root_path="/app")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "")


def test_native_strings_are_latin1_views_of_utf8() -> None:
    env = environ(path="/caf\u00e9", query_string=b"q=%C3%A9")
    assert env["PATH_INFO"] == "/caf\xc3\xa9"
    assert env["QUERY_STRING"] == "q=%C3%A9"


def test_headers_merge_and_special_names() -> None:
    env = environ(
        headers=[
            (b"content-type", b"text/plain"),
            (b"content-length", b"4"),
            (b"x-forwarded-for", b"a"),
            (b"x-forwarded-for", b"b"),
            (b"cookie", b"a=1"),
            (b"cookie", b"b=2"),
            (b"x-latin", "\xe9".encode("latin-1")),
        ]
    )
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "4"
    assert env["HTTP_X_FORWARDED_FOR"] == "a,b"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_X_LATIN"] == "\xe9"
    assert "HTTP_CONTENT_TYPE" not in env


def test_empty_content_length_is_absent() -> None:
    assert "CONTENT_LENGTH" not in environ(headers=[(b"content-length", b"")])
    assert "CONTENT_TYPE" not in environ(headers=[])


def test_server_name_and_port() -> None:
    env = environ(server=("10.0.0.1", 8080))
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("10.0.0.1", "8080")
    env = environ(server=None, headers=[(b"host", b"example.com:8443")])
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", "8443")
    env = environ(server=("/run/app.sock", None), scheme="https", headers=[(b"host", b"ex.org")])
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("ex.org", "443")
    env = environ(server=None, headers=[(b"host", b"[::1]:9000")])
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("[::1]", "9000")
    env = environ(server=None, headers=[])
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("localhost", "80")


def test_wsgi_keys() -> None:
    env = environ(scheme="https", client=("192.0.2.1", 4000))
    assert env["wsgi.url_scheme"] == "https"
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.input"].read() == b"body"
    assert env["wsgi.multiprocess"] is True
    assert env["wsgi.multithread"] is False
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert env["REMOTE_ADDR"] == "192.0.2.1"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert callable(env["wsgi.file_wrapper"])
    env["wsgi.errors"].write("to the log\n")


def test_duplicate_header_limit_raises_value_error_like_asgiref() -> None:
    instance = WsgiToAsgiInstance(None, duplicate_header_limit=2)
    with pytest.raises(ValueError, match="Too many duplicate headers"):
        instance.build_environ(http_scope(headers=[(b"x", b"1")] * 3), io.BytesIO())


def test_start_response_records_like_asgiref() -> None:
    instance = WsgiToAsgiInstance(None)
    instance.start_response("201 Created", [("X-A", "1"), ("Content-Length", "3")])
    assert instance.response_start == {
        "type": "http.response.start",
        "status": 201,
        "headers": [(b"x-a", b"1"), (b"content-length", b"3")],
    }
    assert instance.response_content_length == 3
    with pytest.raises(ValueError, match="second time"):
        instance.start_response("200 OK", [])
    try:
        raise KeyError("x")
    except KeyError:
        exc_info = sys.exc_info()
    instance.start_response("500 Error", [], exc_info)
    assert instance.response_start["status"] == 500
    instance.response_started = True  # headers are out: exc_info is re-raised
    with pytest.raises(KeyError, match="x"):
        instance.start_response("500 Error", [], exc_info)


@pytest.mark.parametrize(
    ("status", "headers"),
    [("OK", []), ("200OK", []), ("200 OK", [("Bad Name", "x")]), ("200 OK", [("X", "a\nb")])],
)
def test_start_response_refuses_bad_output(status: str, headers: Any) -> None:
    with pytest.raises(ValueError, match=r"status|header"):
        WsgiToAsgiInstance(None).start_response(status, headers)
