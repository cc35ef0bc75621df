"""The edge's rules on their own: what is refused, how heads are counted, how refusals
are counted and logged, the default connection bound."""

from __future__ import annotations

from typing import Any

import pytest

from wsgipool._front.guard import Limits, Refusals, refusal
from wsgipool._serve.edge import HeadScanner, max_connections_for


def scope(**values: Any) -> dict[str, Any]:
    base = {"type": "http", "method": "GET", "path": "/", "raw_path": b"/", "query_string": b""}
    return {**base, "headers": [(b"host", b"x")], **values}


def test_refusal_rules() -> None:
    limits = Limits(request_line=40, fields=3, field_size=30)

    def refused(**values: Any) -> tuple[int, str] | None:
        found = refusal(scope(**values), limits)
        return None if found is None else (found.status, found.reason)

    assert refused() is None
    assert refused(method="CONNECT") == (405, "connect")
    assert refused(raw_path=b"/" + b"a" * 40) == (414, "request_line")
    assert refused(query_string=b"q=" + b"a" * 40) == (414, "request_line")
    many = [(b"x", b"y")] * 4
    assert refused(headers=many) == (431, "fields")
    large = [(b"x", b"y" * 28)]
    assert refused(headers=large) == (431, "field_size")
    both = [(b"content-length", b"5"), (b"transfer-encoding", b"chunked")]
    assert refused(headers=both) == (400, "framing")
    assert refused(headers=[(b"content-length", b"5"), (b"content-length", b"6")]) == (
        400,
        "framing",
    )
    assert refusal(scope(headers=many + large), Limits(0, 0, 0)) is None  # 0: no limit


def test_head_scanner_counts_lines_across_reads() -> None:
    def first_refusal(*chunks: bytes) -> int | None:
        scanner = HeadScanner(Limits(request_line=20, fields=2, field_size=10))
        for chunk in chunks:
            found = scanner.feed(chunk)
            if found is not None:
                return found.status
        return None

    assert first_refusal(b"GET / HTTP/1.1\r", b"\nA: 123456\r\n\r", b"\n" + b"x" * 100) is None
    assert first_refusal(b"\r\nGET / HTTP/1.1\r\n\r\n") is None  # a leading empty line
    assert first_refusal(b"GET /aaaaaaaaa", b"aaaaaaaaaaaaaaa") == 414  # before any newline
    assert first_refusal(b"GET / HTTP/1.1\r\nA: 12345678\r\n") == 431
    assert first_refusal(b"GET / HTTP/1.1\r\n", b"A: 1\r\n" * 3) == 431


def test_refusals_are_counted_and_logged_sparingly(caplog: pytest.LogCaptureFixture) -> None:
    refusals = Refusals()
    found = refusal(scope(method="CONNECT"), Limits())
    assert found is not None
    with caplog.at_level("WARNING", logger="wsgipool.edge"):
        for _ in range(50):
            refusals.refused(found, ("10.0.0.1", 5000))
            refusals.closed("header_timeout", "no request", ("10.0.0.2", 5001))
    assert refusals.requests == {(405, "connect"): 50}
    assert refusals.connections == {"header_timeout": 50}
    assert [r.getMessage() for r in caplog.records] == [
        "refused 405 from 10.0.0.1:5000: CONNECT cannot be served by a WSGI app",
        "closed a connection from 10.0.0.2:5001: no request",
    ]


def test_default_bound_fits_the_descriptor_limit() -> None:
    assert max_connections_for(1_048_576, 8) == 4096
    assert max_connections_for(1024, 8) == (1024 - 64 - 32) // 3  # socket and spool files
    assert max_connections_for(50, 8) == 1
