"""ASGI HTTP scope -> WSGI environ (PEP 3333).

The front builds the CGI part, which is plain ``str -> str`` and crosses the pipe as
msgpack; the worker adds the ``wsgi.*`` objects that cannot travel (streams, callables).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any
from urllib.parse import quote, unquote_to_bytes

from .._types import Environ, Scope

#: The environ key under which the app finds its request's id (when ids are on).
REQUEST_ID_KEY = "wsgipool.request_id"
_SPECIAL = {"content-length": "CONTENT_LENGTH", "content-type": "CONTENT_TYPE"}
_DEFAULT_PORT = {"http": "80", "https": "443", "ws": "80", "wss": "443"}
_PROTOCOLS = {version: f"HTTP/{version}" for version in ("1.0", "1.1", "2", "3")}


class TooManyHeadersError(ValueError):
    """A header name repeats more often than ``duplicate_header_limit`` allows."""


def _native(text: str) -> str:
    """PEP 3333 native string: the UTF-8 bytes of ``text`` read as latin-1."""
    return text if text.isascii() else text.encode("utf-8").decode("latin-1")


#: Header name -> environ key, remembered for the names clients actually send.
_KEYS: dict[bytes, str] = {}


def _key_for(raw_name: bytes) -> str:
    name = raw_name.decode("latin-1").lower()
    key = _SPECIAL.get(name) or "HTTP_" + name.upper().replace("-", "_")
    if len(_KEYS) < 1024:  # bounded: arbitrary names cannot grow it without limit
        _KEYS[raw_name] = key
    return key


def split_root_path(path: str, root_path: str) -> tuple[str, str]:
    """Return ``(SCRIPT_NAME, PATH_INFO)``; the root is stripped only at a segment boundary."""
    root = root_path.rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        return root, path[len(root) :]
    return root, path


def _origin_form(target: str) -> str:
    """``http://host/echo`` -> ``/echo``: an absolute-form target without its authority."""
    start = target.find("://")
    if start < 0:
        return target  # "*" (OPTIONS *), or already a path
    slash = target.find("/", start + 3)
    return target[slash:] if slash >= 0 else "/"


def request_path(scope: Scope) -> tuple[str, str]:
    """``(path, raw URI without the query)``, both native strings.

    The path comes from ``raw_path`` percent-decoded as bytes, as gunicorn decodes the
    request line, so ``/%ff`` is ``"/\xff"`` and not U+FFFD. Should ``path`` no longer
    match ``raw_path`` (a middleware rewrote it), ``path`` wins.
    """
    path: str = scope["path"]
    if path[:1] != "/":
        path = _origin_form(path)
    raw: bytes | None = scope.get("raw_path")
    if not raw:
        return _native(path), quote(path, safe="/:@!$&'()*+,;=~")
    raw_uri = raw.decode("latin-1")
    target = raw_uri if raw_uri[:1] == "/" else _origin_form(raw_uri)
    decoded = unquote_to_bytes(target).decode("latin-1") if "%" in target else target
    if decoded == path:
        return decoded, raw_uri
    if not decoded.isascii() and decoded.encode("latin-1").decode("utf-8", "replace") == path:
        return decoded, raw_uri
    return _native(path), raw_uri


def request_target(scope: Scope) -> str:
    """``/path?query`` as the client sent it (still percent-encoded), for logs: the
    ``raw_path`` when the server gives one, else the decoded ``path``."""
    raw = scope.get("raw_path")
    target = raw.decode("latin-1") if raw else scope.get("path", "")
    query = scope.get("query_string")
    return f"{target}?{query.decode('latin-1')}" if query else target


def split_host(host: str) -> tuple[str, str]:
    """``"example.com:8080"`` -> ``("example.com", "8080")``; ``"[::1]"`` -> ``("[::1]", "")``."""
    if host.startswith("["):  # [v6]:port
        end = host.find("]") + 1
        name, rest = host[:end], host[end:]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.partition(":")
    return name, port if port.isdigit() else ""


def _server(scope: Scope, headers: dict[str, str], scheme: str) -> tuple[str, str]:
    server = scope.get("server")
    if server is not None:  # a unix socket is (path, None): port "0", as asgiref says
        return str(server[0]), "0" if server[1] is None else str(server[1])
    # The server did not say: fall back on Host.
    name, port = split_host(headers.get("HTTP_HOST", ""))
    return name or "localhost", port or _DEFAULT_PORT.get(scheme, "80")


def cgi_environ(scope: Scope, duplicate_header_limit: int | None = 100) -> dict[str, str]:
    """The serialisable part of the environ for an ``http`` scope."""
    headers: dict[str, str] = {}
    counts: dict[str, int] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        key = _KEYS.get(raw_name) or _key_for(raw_name)
        value = raw_value.decode("latin-1")
        if key not in headers:
            headers[key] = value
            continue
        seen = counts.get(key, 1)
        if duplicate_header_limit and seen >= duplicate_header_limit:
            raise TooManyHeadersError(
                f"Too many duplicate headers: {key} exceeds limit of {duplicate_header_limit}"
            )
        counts[key] = seen + 1
        headers[key] += ("; " if key == "HTTP_COOKIE" else ",") + value
    if not headers.get("CONTENT_LENGTH", "x").strip():
        del headers["CONTENT_LENGTH"]  # an empty value means "absent", not "zero"
    scheme = scope.get("scheme", "http")
    path, raw_uri = request_path(scope)
    root_path = scope.get("root_path", "")
    if root_path:
        script_name, path_info = split_root_path(path, _native(root_path))
    else:
        script_name, path_info = "", path  # mounted at the root: the usual case
    server_name, server_port = _server(scope, headers, scheme)
    query = scope.get("query_string", b"").decode("latin-1")
    if query:
        raw_uri += "?" + query
    version = scope.get("http_version", "1.1")
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "RAW_URI": raw_uri,
        "REQUEST_URI": raw_uri,
        "SERVER_PROTOCOL": _PROTOCOLS.get(version) or f"HTTP/{version}",
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "wsgi.url_scheme": scheme,
    }
    client = scope.get("client")
    if client is not None:
        environ["REMOTE_ADDR"] = str(client[0])
        if client[1] is not None:
            environ["REMOTE_PORT"] = str(client[1])
    environ.update(headers)
    return environ


def complete_environ(
    cgi: dict[str, Any],
    stream: IO[bytes] | Any,
    errors: IO[str] | Any,
    file_wrapper: Callable[..., Any] | None = None,
) -> Environ:
    """Add the ``wsgi.*`` objects of PEP 3333 to a CGI environ, in place, and return it."""
    cgi["wsgi.version"] = (1, 0)
    cgi.setdefault("wsgi.url_scheme", "http")
    cgi["wsgi.input"] = stream
    cgi["wsgi.errors"] = errors
    # Each worker process runs one request at a time.
    cgi["wsgi.multithread"] = False
    cgi["wsgi.multiprocess"] = True
    cgi["wsgi.run_once"] = False
    # The body ends where the client's body ends: read() without a size is safe.
    cgi["wsgi.input_terminated"] = True
    if file_wrapper is not None:
        cgi["wsgi.file_wrapper"] = file_wrapper
    return cgi
