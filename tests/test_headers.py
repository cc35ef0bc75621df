"""Response headers as apps really write them, through real servers with strict parsers."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from wsgipool import WsgiToAsgi, WsgiToAsgiInstance


def raw_get(port: int, path: str = "/") -> bytes:
    """One request on a raw socket; the whole answer, bytes as the server wrote them."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_padded_values_and_list_pairs_pass_strict_servers(serve: Any, http: str) -> None:
    with serve(WsgiToAsgi("apps:loose_headers", workers=1), http=http) as server:
        answers = [raw_get(server.port) for _ in range(2)]
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 200 OK"
        assert b"set-cookie: csrftoken=abc; Path=/; SameSite=Lax" in lines
        assert b"x-colour: Blue" in lines
        assert b"x-padded: padded" in lines
        assert f"content-length: {len(body)}".encode() in lines
    # The same worker answered both: no worker was lost to a refused header.
    assert answers[0].partition(b"\r\n\r\n")[2] == answers[1].partition(b"\r\n\r\n")[2]


def test_start_response_normalises_like_a_server() -> None:
    instance = WsgiToAsgiInstance(None)
    instance.start_response("200 OK", [["X-Colour", "Blue"], ("Set-Cookie", " a=1 ")])
    assert instance.response_start["headers"] == [(b"x-colour", b"Blue"), (b"set-cookie", b"a=1")]


@pytest.mark.parametrize(
    "header",
    [
        ("X-A", "a\r\nb"),
        ("X-A", "a\nb"),
        ("X-A", "a\0b"),
        ("X-A\r\n", "v"),
        ("X A", "v"),
        ("", "v"),
        ("X:A", "v"),
    ],
)
def test_unsafe_headers_are_still_refused(header: tuple[str, str]) -> None:
    with pytest.raises(ValueError, match="header"):
        WsgiToAsgiInstance(None).start_response("200 OK", [header])


@pytest.mark.parametrize("header", [("X-A",), ("X-A", "1", "2"), "X-A: 1", b"ab", {"X": "1"}])
def test_headers_that_are_not_pairs_are_refused(header: Any) -> None:
    with pytest.raises(TypeError, match="pair"):
        WsgiToAsgiInstance(None).start_response("200 OK", [header])
