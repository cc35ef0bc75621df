"""Proxy headers: what a trusted proxy says about the client, applied to the environ.

``Forwarded`` (RFC 7239) and ``X-Forwarded-For/-Proto/-Host/-Port/-Prefix`` are applied
when the peer is one of ``forwarded_allow_ips`` (addresses, networks, ``unix`` for a
unix-socket peer, ``*``), and only those named in ``trusted_proxy_headers``. With
``proxy_hops`` proxies in a chain, each appending to the headers, the value the
outermost trusted one appended (``proxy_hops`` from the right) describes the client.
The proxy headers of an untrusted peer, and those not trusted, are removed from the
environ, as waitress's ``clear_untrusted_proxy_headers`` does: an app that reads them
itself cannot be fooled either. Done in the adapter, so every ASGI server gets it.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable
from typing import Any

from .._errors import ConfigError
from .._types import Scope
from .._wire.environ import split_host

log = logging.getLogger("wsgipool.front")

#: Header name -> environ key, of every proxy header this module knows.
KEYS = {
    "forwarded": "HTTP_FORWARDED",
    "x-forwarded-for": "HTTP_X_FORWARDED_FOR",
    "x-forwarded-proto": "HTTP_X_FORWARDED_PROTO",
    "x-forwarded-host": "HTTP_X_FORWARDED_HOST",
    "x-forwarded-port": "HTTP_X_FORWARDED_PORT",
    "x-forwarded-prefix": "HTTP_X_FORWARDED_PREFIX",
}
#: The same, by the raw header name (ASGI servers give them in lower case).
_BY_NAME = {name.encode(): key for name, key in KEYS.items()}
_DEFAULT_PORT = {"http": "80", "https": "443"}
#: One element of a Forwarded list: up to a comma outside a quoted string.
_ELEMENT = re.compile(r'(?:[^,"]|"(?:[^"\\]|\\.)*")+')
#: One ``name=value`` pair of a Forwarded element: a token, or a quoted string.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PAIR = re.compile(rf'\s*({_TOKEN})=({_TOKEN}|"(?:[^"\\]|\\.)*")\s*')
#: Peer addresses whose trust is remembered (proxies are few; clients may be many).
_KNOWN_PEERS = 4096
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*\Z")


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """``for=a;proto=https, for="[::1]:80"`` -> one dict per element, names lowercased,
    quotes and escapes undone; a malformed header raises ValueError."""
    elements: list[dict[str, str]] = [{}]
    pos = 0
    while pos < len(value):
        match = _PAIR.match(value, pos)
        if match is None:
            raise ValueError(f"malformed Forwarded header at {pos}: {value!r}")
        name, text = match.group(1).lower(), match.group(2)
        if text.startswith('"'):
            text = re.sub(r"\\(.)", r"\1", text[1:-1])
        elements[-1][name] = text
        pos = match.end()
        if pos < len(value):
            if value[pos] == ",":
                elements.append({})
            elif value[pos] != ";":
                raise ValueError(f"malformed Forwarded header at {pos}: {value!r}")
            pos += 1
    return [element for element in elements if element]


def forwarded_elements(value: str) -> list[str]:
    """The elements of a Forwarded list, unparsed: each proxy appends its own, so the
    ones a trusted proxy wrote are read even when a client's (leftmost) is malformed."""
    return [element for element in _ELEMENT.findall(value) if element.strip()]


def exact_values(scope: Scope) -> dict[str, str]:
    """The proxy headers of ``scope`` by environ key, from their exact names only: in the
    environ ``X_Forwarded_For`` and ``X-Forwarded-For`` are one key, and a client could
    add to what its proxy says through the first (nginx drops such names, others pass
    them on)."""
    found: dict[str, list[str]] = {}
    for name, value in scope.get("headers", ()):
        key = _BY_NAME.get(bytes(name).lower())
        if key is not None:
            found.setdefault(key, []).append(bytes(value).decode("latin-1"))
    return {key: ",".join(values) for key, values in found.items()}


def split_node(node: str) -> tuple[str, str | None]:
    """A ``for`` node into address and port: ``"[2001:db8::1]:4711"`` -> the v6 address
    and ``"4711"``; ``"192.0.2.1"`` -> no port; obfuscated names (``_hidden``, ``unknown``)
    stay as they are, and so does an obfuscated port, which is not a port."""
    node = node.strip()
    if node.startswith("["):
        address, _, rest = node[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif node.count(":") == 1:
        address, port = node.split(":")
    else:
        address, port = node, None  # v4, a bare v6 (X-Forwarded-For), or a name
    return address, port if port is not None and port.isdigit() else None


def _nth_from_right(values: list[str], hops: int) -> str:
    return values[max(len(values) - hops, 0)].strip()


def _listed(value: str) -> list[str]:
    return [item for item in (part.strip() for part in value.split(",")) if item]


class Proxies:
    """Which peers are trusted, and what of their headers is applied."""

    def __init__(
        self, enabled: bool, allow: Iterable[str], hops: int, headers: Iterable[str]
    ) -> None:
        self.enabled = enabled
        self.hops = hops
        self.anyone = False
        self.unix = False
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allow:
            entry = entry.strip()
            if entry == "*":
                self.anyone = True
            elif entry == "unix":
                self.unix = True
            else:
                try:
                    self.networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise ConfigError(
                        f"forwarded_allow_ips must list addresses, networks, unix or *, "
                        f"got {entry!r}", option="forwarded_allow_ips"
                    ) from None  # fmt: skip
        names = [name.strip().lower() for name in headers]
        unknown = sorted(set(names) - set(KEYS))
        if unknown:
            raise ConfigError(
                f"trusted_proxy_headers must be some of {', '.join(KEYS)}, got {unknown[0]!r}",
                option="trusted_proxy_headers",
            )
        self.trusted = {KEYS[name] for name in names}
        self.warned = False
        self._known: dict[str, bool] = {}  # peer address -> trusted: parsed once

    def trusts(self, scope: Scope) -> bool:
        """Is the peer of ``scope`` one of the trusted proxies?"""
        if self.anyone:
            return True
        client = scope.get("client")
        server = scope.get("server")
        if not client or not client[0] or (server is not None and server[1] is None):
            return self.unix  # a unix socket's peer has no address
        host = str(client[0])
        known = self._known.get(host)
        if known is None:
            if len(self._known) >= _KNOWN_PEERS:
                self._known.clear()
            known = self._known[host] = self._listed(host)
        return known

    def _listed(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def apply(self, environ: dict[str, Any], scope: Scope) -> None:
        """Apply a trusted peer's headers to ``environ``; remove the rest of them.
        ValueError: the Forwarded element a trusted proxy wrote is malformed (a 400: the
        proxy's own address must not pass for the client's)."""
        if not self.enabled:  # once said, nothing more to do per request
            if not self.warned and any(key in environ for key in KEYS.values()):
                self._say_ignored(environ, scope)
            return
        present = [key for key in KEYS.values() if key in environ]
        if not present:
            return
        trusted = self.trusts(scope)
        exact = exact_values(scope) if trusted else {}
        for key in present:
            if trusted and key in self.trusted and key in exact:
                environ[key] = exact[key]
            else:
                del environ[key]
        if not trusted:
            return
        if "HTTP_FORWARDED" in environ:
            elements = forwarded_elements(environ["HTTP_FORWARDED"])
            for key in KEYS.values():  # Forwarded says it all: the others are not mixed in
                if key != "HTTP_FORWARDED":
                    environ.pop(key, None)
            if elements:
                chosen = elements[max(len(elements) - self.hops, 0)]
                element = (parse_forwarded(chosen) or [{}])[0]  # ValueError if malformed
                self._set(environ, element.get("for"), element.get("proto"),
                          element.get("host"), None, None)  # fmt: skip
            return
        said = {key: _listed(environ[key]) for key in KEYS.values() if environ.get(key)}
        picked = {key: _nth_from_right(values, self.hops) for key, values in said.items() if values}
        self._set(
            environ,
            picked.get("HTTP_X_FORWARDED_FOR"),
            picked.get("HTTP_X_FORWARDED_PROTO"),
            picked.get("HTTP_X_FORWARDED_HOST"),
            picked.get("HTTP_X_FORWARDED_PORT"),
            picked.get("HTTP_X_FORWARDED_PREFIX"),
        )

    def _set(
        self,
        environ: dict[str, Any],
        client: str | None,
        proto: str | None,
        host: str | None,
        port: str | None,
        prefix: str | None,
    ) -> None:
        if client:
            address, client_port = split_node(client)
            environ["REMOTE_ADDR"] = address
            if client_port is None:
                environ.pop("REMOTE_PORT", None)  # the proxy's port would be a lie
            else:
                environ["REMOTE_PORT"] = client_port
        if proto and _SCHEME.match(proto.lower()):
            environ["wsgi.url_scheme"] = proto.lower()
            environ["SERVER_PORT"] = _DEFAULT_PORT.get(proto.lower(), environ["SERVER_PORT"])
        scheme = environ.get("wsgi.url_scheme", "http")
        if host:
            name, host_port = split_host(host)
            environ["HTTP_HOST"] = host
            environ["SERVER_NAME"] = name
            environ["SERVER_PORT"] = host_port or _DEFAULT_PORT.get(scheme, "80")
        if port and port.isdigit():
            environ["SERVER_PORT"] = port
            name, host_port = split_host(environ.get("HTTP_HOST", ""))
            if name and not host_port and port != _DEFAULT_PORT.get(scheme):
                environ["HTTP_HOST"] = f"{name}:{port}"
        if prefix:
            prefix = "/" + prefix.strip("/")
            prefix = "" if prefix == "/" else prefix
            environ["SCRIPT_NAME"] = prefix + environ.get("SCRIPT_NAME", "")

    def _say_ignored(self, environ: dict[str, Any], scope: Scope) -> None:
        """Once: proxy headers from a peer that would be trusted, while they are off."""
        if self.trusts(scope):
            self.warned = True
            found = [name for name, key in KEYS.items() if key in environ]
            peer = (scope.get("client") or ("a unix socket",))[0]
            log.warning(
                "a request from %s carries %s, which is ignored: proxy headers are off "
                "(turn them on with proxy_headers, --proxy-headers or WSGIPOOL_PROXY_HEADERS)",
                peer, ", ".join(found),
            )  # fmt: skip
