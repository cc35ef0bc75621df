"""Scope -> environ (PEP 3333, ASGI HTTP spec), through the public ``build_environ``."""

from __future__ import annotations

import io
import json
import socket
import sys
from typing import Any

import httpx
import pytest

from asgi_helpers import http_scope
from support import hypercorn_thread, wait_for
from wsgipool import WsgiToAsgi, WsgiToAsgiInstance


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
    # A unix socket: the socket's path and port "0", as asgiref 3.13 gives them.
    env = environ(server=("/run/app.sock", None), scheme="https", headers=[(b"host", b"ex.org")])
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("/run/app.sock", "0")
    env = environ(server=["/run/app.sock", None])
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("/run/app.sock", "0")
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


def test_unix_socket_server_matches_asgiref() -> None:
    from asgiref.wsgi import WsgiToAsgiInstance as AsgirefInstance

    for server in (("/run/app.sock", None), ["/run/app.sock", None], ("10.0.0.1", 81)):
        scope = http_scope(server=server)
        instance = AsgirefInstance(None)
        instance.scope = scope  # asgiref's build_environ reads the headers from there
        theirs = instance.build_environ(scope, io.BytesIO())
        ours = environ(server=server)
        assert (ours["SERVER_NAME"], ours["SERVER_PORT"]) == (
            theirs["SERVER_NAME"],
            theirs["SERVER_PORT"],
        )


def test_path_info_from_raw_path_bytes() -> None:
    env = environ(path="/\ufffd\ufffd", raw_path=b"/%ff%fe", query_string=b"a=%20")
    assert env["PATH_INFO"] == "/\xff\xfe"
    assert env["RAW_URI"] == env["REQUEST_URI"] == "/%ff%fe?a=%20"
    env = environ(path="/a/b", raw_path=b"/a%2Fb")
    assert (env["PATH_INFO"], env["RAW_URI"]) == ("/a/b", "/a%2Fb")
    env = environ(path="/caf\u00e9", raw_path=b"/caf%C3%A9")
    assert env["PATH_INFO"] == "/caf\xc3\xa9"


def test_without_raw_path_the_path_is_used() -> None:
    env = environ(path="/caf\u00e9 x", raw_path=None, query_string=b"q=1")
    assert env["PATH_INFO"] == "/caf\xc3\xa9 x"
    assert env["RAW_URI"] == "/caf%C3%A9%20x?q=1"
    scope = http_scope(path="/plain")
    del scope["raw_path"]
    env = WsgiToAsgiInstance(None).build_environ(scope, io.BytesIO())
    assert (env["PATH_INFO"], env["RAW_URI"]) == ("/plain", "/plain")


def test_a_path_rewritten_after_the_server_wins_over_raw_path() -> None:
    env = environ(path="/rewritten", raw_path=b"/original")
    assert env["PATH_INFO"] == "/rewritten"


def test_absolute_form_target() -> None:
    env = environ(path="http://evil/echo", raw_path=b"http://evil/echo", query_string=b"q=1")
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/echo", "q=1")
    assert env["RAW_URI"] == "http://evil/echo?q=1"
    assert environ(path="http://evil", raw_path=b"http://evil")["PATH_INFO"] == "/"


def test_root_path_is_stripped_from_the_decoded_path() -> None:
    env = environ(path="/caf\u00e9/\ufffd", raw_path=b"/caf%C3%A9/%ff", root_path="/caf\u00e9")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/caf\xc3\xa9", "/\xff")


def raw_environ(url: str, target: str) -> dict[str, Any]:
    """``GET target`` written byte for byte on a socket; the app's environ as JSON."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    if b"transfer-encoding: chunked" in head.lower():
        body = b"".join(body.split(b"\r\n")[1::2])
    data: dict[str, Any] = json.loads(body)
    return data


def check_paths(url: str, prefix: str = "") -> None:
    env = raw_environ(url, prefix + "/%ff%fe?x=1")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == (prefix, "/\xff\xfe")
    assert env["RAW_URI"] == env["REQUEST_URI"] == prefix + "/%ff%fe?x=1"
    env = raw_environ(url, prefix + "/caf%C3%A9/a%2Fb")
    assert env["PATH_INFO"] == "/caf\xc3\xa9/a/b"
    assert env["RAW_URI"] == prefix + "/caf%C3%A9/a%2Fb"
    env = raw_environ(url, f"http://evil{prefix}/echo?q=1")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == (prefix, "/echo", "q=1")


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_raw_paths_through_uvicorn(serve: Any, http: str) -> None:
    with serve(WsgiToAsgi("apps:environ_json", workers=1), http=http) as server:
        check_paths(server.url)


def test_raw_paths_under_a_root_path(serve: Any) -> None:
    app = WsgiToAsgi("apps:environ_json", workers=1)
    with serve(app, http="h11", root_path="/dj") as server:
        env = raw_environ(server.url, "/%ff?x=1")
        # uvicorn puts its root_path in front of both path and raw_path.
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/dj", "/\xff")
        assert env["RAW_URI"] == "/dj/%ff?x=1"


def test_raw_paths_through_hypercorn() -> None:
    app = WsgiToAsgi("apps:environ_json", workers=1, health=True)
    with hypercorn_thread(app, "asyncio") as url:

        def up() -> bool:
            try:
                return httpx.get(url + "/-/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, what="hypercorn")
        check_paths(url)
