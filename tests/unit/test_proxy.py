"""Proxy headers: RFC 7239 parsing, trust by address, hops, and what reaches the environ."""

from __future__ import annotations

from typing import Any

import pytest

from wsgipool._errors import ConfigError
from wsgipool._front.proxy import Proxies, parse_forwarded, split_node
from wsgipool._wire.environ import cgi_environ

ALL = ("forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
       "x-forwarded-port", "x-forwarded-prefix")  # fmt: skip


def environ(
    headers: list[tuple[str, str]], client: tuple[str, int] | None = ("127.0.0.1", 5000),
    server: tuple[str, int | None] = ("127.0.0.1", 8000), **options: Any,
) -> dict[str, Any]:  # fmt: skip
    scope = {
        "type": "http", "method": "GET", "path": "/app/x", "raw_path": b"/app/x",
        "query_string": b"", "headers": [(k.encode(), v.encode()) for k, v in headers],
        "client": client, "server": server, "scheme": "http",
    }  # fmt: skip
    cgi = cgi_environ(scope)
    settings = {"allow": ("127.0.0.1", "10.0.0.0/8", "unix"), "hops": 1, "trusted": ALL}
    settings.update(options)
    Proxies(True, settings["allow"], settings["hops"], settings["trusted"]).apply(cgi, scope)
    return cgi


def test_rfc_7239_quoting_ipv6_and_several_elements() -> None:
    header = (
        'for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711";host="a\\"b"'
    )
    assert parse_forwarded(header) == [
        {"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"},
        {"for": "[2001:db8:cafe::17]:4711", "host": 'a"b'},
    ]
    assert parse_forwarded("for=_hidden, for=unknown") == [{"for": "_hidden"}, {"for": "unknown"}]
    for bad in ("for", "for=a b", 'for="unterminated', "for=a;;"):
        with pytest.raises(ValueError, match="malformed"):
            parse_forwarded(bad)


@pytest.mark.parametrize(
    ("node", "split"),
    [
        ("192.0.2.60", ("192.0.2.60", None)),
        ("192.0.2.60:443", ("192.0.2.60", "443")),
        ("[2001:db8:cafe::17]:4711", ("2001:db8:cafe::17", "4711")),
        ("[::1]", ("::1", None)),
        ("2001:db8::1", ("2001:db8::1", None)),  # X-Forwarded-For writes v6 bare
        ("_hidden", ("_hidden", None)),
        ("unknown:_port", ("unknown", None)),  # an obfuscated port is no port
    ],
)
def test_nodes(node: str, split: tuple[str, str | None]) -> None:
    assert split_node(node) == split


def test_forwarded_from_a_trusted_proxy_sets_client_scheme_host_and_port() -> None:
    env = environ([("Forwarded", 'for="[2001:db8::17]:4711";proto=https;host=example.com')])
    assert env["REMOTE_ADDR"] == "2001:db8::17"
    assert env["REMOTE_PORT"] == "4711"
    assert env["wsgi.url_scheme"] == "https"
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == (
        "example.com", "example.com", "443")  # fmt: skip
    assert env["HTTP_FORWARDED"]  # a trusted header stays for the app to read


def test_x_forwarded_headers_and_the_prefix() -> None:
    env = environ([
        ("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "example.com"), ("X-Forwarded-Port", "8443"),
        ("X-Forwarded-Prefix", "/shop/"),
    ])  # fmt: skip
    assert env["REMOTE_ADDR"] == "203.0.113.9"
    assert "REMOTE_PORT" not in env  # the header carries none: the proxy's would be wrong
    assert env["wsgi.url_scheme"] == "https"
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == (
        "example.com:8443", "example.com", "8443")  # fmt: skip
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/shop", "/app/x")


def test_hops_pick_the_value_the_outermost_trusted_proxy_appended() -> None:
    chain = [("X-Forwarded-For", "6.6.6.6, 198.51.100.1, 10.0.0.5"),
             ("X-Forwarded-Proto", "http, https, http")]  # fmt: skip
    assert environ(chain)["REMOTE_ADDR"] == "10.0.0.5"
    two = environ(chain, hops=2)
    assert (two["REMOTE_ADDR"], two["wsgi.url_scheme"]) == ("198.51.100.1", "https")
    assert environ(chain, hops=9)["REMOTE_ADDR"] == "6.6.6.6"  # fewer than hops: the first
    forwarded = [("Forwarded", "for=6.6.6.6;proto=http, for=198.51.100.1;proto=https")]
    assert environ(forwarded, hops=2)["REMOTE_ADDR"] == "6.6.6.6"
    assert environ(forwarded)["wsgi.url_scheme"] == "https"


def test_an_untrusted_peer_changes_nothing_and_its_headers_are_gone() -> None:
    headers = [("Forwarded", "for=1.2.3.4;proto=https"), ("X-Forwarded-For", "1.2.3.4"),
               ("X-Forwarded-Host", "evil.example"), ("X-Forwarded-Prefix", "/x")]  # fmt: skip
    env = environ(headers, client=("192.0.2.77", 4000))
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("192.0.2.77", "4000")
    assert (env["wsgi.url_scheme"], env["SCRIPT_NAME"], env["SERVER_PORT"]) == ("http", "", "8000")
    assert not [key for key in env if "FORWARDED" in key]


def test_only_the_trusted_headers_apply_and_the_others_are_removed() -> None:
    env = environ([("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Host", "evil.example")],
                  trusted=("x-forwarded-for",))  # fmt: skip
    assert env["REMOTE_ADDR"] == "203.0.113.9"
    assert "HTTP_X_FORWARDED_HOST" not in env
    assert "HTTP_HOST" not in env


def test_unix_socket_peers_and_cidrs() -> None:
    unix = environ([("X-Forwarded-For", "203.0.113.9")], client=None, server=("/run/a.sock", None))
    assert unix["REMOTE_ADDR"] == "203.0.113.9"
    assert (
        environ([("X-Forwarded-For", "1.1.1.1")], client=("10.9.8.7", 1))["REMOTE_ADDR"]
        == "1.1.1.1"
    )
    no_unix = environ([("X-Forwarded-For", "203.0.113.9")], client=None,
                      server=("/run/a.sock", None), allow=("127.0.0.1",))  # fmt: skip
    assert "REMOTE_ADDR" not in no_unix
    assert "HTTP_X_FORWARDED_FOR" not in no_unix


def test_a_malformed_forwarded_element_of_the_proxy_is_refused() -> None:
    """Not applied, never the proxy's own address passed off as the client's: the
    adapter answers 400."""
    with pytest.raises(ValueError, match="malformed"):
        environ([("Forwarded", "for=a b"), ("X-Forwarded-For", "203.0.113.9")])


def test_a_clients_malformed_forwarded_line_does_not_hide_the_proxys_element() -> None:
    """The client sends a garbage line, the proxy appends its own element: the lines are
    one list, and the proxy's element (the rightmost) is still read."""
    env = environ([("Forwarded", "x"), ("Forwarded", "for=203.0.113.9;proto=https")],
                  client=("10.0.0.5", 5555))  # fmt: skip
    assert env["REMOTE_ADDR"] == "203.0.113.9"
    assert env["wsgi.url_scheme"] == "https"
    assert "REMOTE_PORT" not in env


def test_underscored_names_add_nothing_to_what_the_proxy_says() -> None:
    """``X_Forwarded_For`` and ``X-Forwarded-For`` are one environ key: a client's value
    under the first must not become the rightmost, trusted one."""
    env = environ([("X-Forwarded-For", "203.0.113.9"), ("X_Forwarded_For", "6.6.6.6"),
                   ("X_Forwarded_Proto", "https")])  # fmt: skip
    assert env["REMOTE_ADDR"] == "203.0.113.9"
    assert env["HTTP_X_FORWARDED_FOR"] == "203.0.113.9"
    assert env["wsgi.url_scheme"] == "http"
    assert "HTTP_X_FORWARDED_PROTO" not in env


def test_bad_settings_name_the_option() -> None:
    with pytest.raises(ConfigError, match=r"forwarded_allow_ips must list .* got 'nonsense'"):
        Proxies(True, ["nonsense"], 1, ["forwarded"])
    with pytest.raises(ConfigError, match="trusted_proxy_headers must be some of"):
        Proxies(True, ["*"], 1, ["x-real-ip"])


def test_trust_is_remembered_per_peer_address() -> None:
    proxies = Proxies(True, ["10.0.0.0/8"], 1, ["x-forwarded-for"])
    for _ in range(2):  # the second time from what was remembered
        for peer, trusted in (("10.1.2.3", True), ("192.0.2.1", False), ("::1", False)):
            scope = {"client": (peer, 1), "server": ("127.0.0.1", 80)}
            assert proxies.trusts(scope) is trusted, peer
