"""Slow and hostile clients at the edge: raw sockets against ``wsgipool serve`` (both of
uvicorn's parsers), and the same hostile requests against hypercorn and Granian."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from support import TESTS, Front, free_port, wait_for
from wsgipool._serve.edge import max_connections_for

PARSERS = ["httptools", "h11"]
#: Long enough for a loaded machine to answer a GET, short enough for the tests.
HEADER_TIMEOUT = "1"
SMUGGLE = (
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
)
CONNECT = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
LONG_LINE = b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
MANY_FIELDS = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Many: y\r\n" * 150 + b"\r\n"
LARGE_FIELD = b"GET / HTTP/1.1\r\nHost: x\r\nX-Large: " + b"a" * 9000 + b"\r\n\r\n"
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


class Peer:
    """One raw client connection on loopback."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # the server may refuse before all is sent
            self.sock.sendall(data)

    def read_all(self) -> bytes:
        """Everything until the server closes (the socket timeout is the backstop)."""
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := self.sock.recv(65536):
                received += chunk
        return received

    def close(self) -> None:
        self.sock.close()


def statuses(data: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"^HTTP/1\.1 (\d{3})", data, re.MULTILINE)]


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new connection; all the server sends until it closes."""
    peer = Peer(port)
    try:
        peer.send(data)
        return peer.read_all()
    finally:
        peer.close()


def serve(front: Callable[..., Front], parser: str, *args: str) -> Front:
    return front(
        "apps:pid", "-w", "1", "--http", parser, "--header-timeout", HEADER_TIMEOUT,
        "--metrics", "--status", "--no-access-log", *args,
    ).ready()  # fmt: skip


def metric(server: Front, name: str, **labels: str) -> float:
    text = server.admin("/-/metrics").text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        metric_name, _, value = line.rpartition(" ")
        if metric_name == f"{name}{{{wanted}}}" or (not labels and metric_name == name):
            return float(value)
    return 0.0


# -- slow and idle connections -------------------------------------------------------------


@pytest.mark.parametrize("parser", PARSERS)
def test_slowloris_and_silent_connections_are_closed(
    front: Callable[..., Front], parser: str
) -> None:
    server = serve(front, parser)
    worker = server.get().text
    silent = [Peer(server.port) for _ in range(5)]
    trickling = [Peer(server.port) for _ in range(5)]
    stop = threading.Event()

    def trickle() -> None:
        for peer in trickling:
            peer.send(b"GET / HTTP/1.1\r\n")
        while not stop.wait(0.1):  # the attack itself: one header line every 100 ms
            for peer in trickling:
                peer.send(b"X-Slow: y\r\n")

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        assert server.get().text == worker  # answered meanwhile, on another connection
        for peer in silent:
            assert peer.read_all() == b""  # closed without a word
        for peer in trickling:
            assert statuses(peer.read_all()) == [408]
    finally:
        stop.set()
        thread.join()
        for peer in silent + trickling:
            peer.close()
    assert server.get().text == worker  # no worker restarted
    assert metric(server, "wsgipool_connections_closed_total", reason="header_timeout") == 10
    assert "closed a connection from 127.0.0.1:" in server.output()


@pytest.mark.parametrize("parser", PARSERS)
def test_keep_alive_head_is_timed_too(front: Callable[..., Front], parser: str) -> None:
    server = serve(front, parser, "--keep-alive", "30")
    peer = Peer(server.port)
    try:
        peer.send(GET)
        assert peer.sock.recv(65536).startswith(b"HTTP/1.1 200")
        peer.send(b"GET / HTTP/1.1\r\n")  # the second head never ends
        assert statuses(peer.read_all()) == [408]
    finally:
        peer.close()


@pytest.mark.parametrize("parser", PARSERS)
def test_at_the_bound_the_cheapest_connection_makes_room(
    front: Callable[..., Front], parser: str
) -> None:
    """Idle first, then the oldest unfinished head, then the slowest upload; 503 only
    when every connection does real work (here: responses being read)."""
    server = front(
        "apps:download", "-w", "1", "--http", parser, "--max-connections", "4",
        "--header-timeout", "60", "--keep-alive", "60", "--client-rate-grace", "60",
        "--metrics", "--no-access-log",
    ).ready()  # fmt: skip
    idle, head, upload = Peer(server.port), Peer(server.port), Peer(server.port)
    idle.send(b"GET /?mib=0 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.sock.recv(65536).startswith(b"HTTP/1.1 200")  # then kept alive, idle
    head.send(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
    upload.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 10)
    busy = [slow_reader(server.port)]
    try:
        for shed in (idle, head, upload):  # each newcomer is served; the cheapest goes
            busy.append(slow_reader(server.port))
            assert shed.read_all() == b""  # closed without a word
        response = exchange(server.port, b"GET /?mib=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert statuses(response) == [503]  # all four are sending responses
        assert b"connection: close" in response
    finally:
        for peer in (idle, head, upload, *busy):
            peer.close()
    closed = "wsgipool_connections_closed_total"
    for reason in ("shed idle", "shed head", "shed upload", "max_connections"):
        assert metric(server, closed, reason=reason) == 1


def test_the_open_files_limit_is_raised_at_start(front: Callable[..., Front]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 512:
        pytest.skip("needs a hard limit of open files above 512, and a finite one")
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))  # inherited by the server
    try:
        server = front("apps:pid", "-w", "1")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    server.ready()
    limits = Path(f"/proc/{server.proc.pid}/limits").read_text()
    assert re.search(rf"Max open files\s+{hard}\s+{hard}\s", limits)
    connections = max_connections_for(hard, 1)
    said = f"at most {connections} connections (open files: 512 raised to {hard})"
    assert said in server.output()


def slow_reader(port: int) -> Peer:
    """A connection whose response is in progress: it reads the head and no more."""
    peer = Peer(port)
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer.send(b"GET /?mib=16 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert peer.sock.recv(4096).startswith(b"HTTP/1.1 200")
    return peer


# -- hostile requests: wsgipool serve -------------------------------------------------------


@pytest.mark.parametrize("parser", PARSERS)
def test_hostile_requests_never_reach_the_app(front: Callable[..., Front], parser: str) -> None:
    server = serve(front, parser)
    worker = server.get().text
    smuggled = exchange(server.port, SMUGGLE)
    assert statuses(smuggled) == [400]  # one answer, then the connection is closed
    for _ in range(20):
        response = exchange(server.port, CONNECT)
        assert statuses(response) == [405]
        assert b"allow: get, head, post" in response.lower()
    assert statuses(exchange(server.port, LONG_LINE)) == [414]
    assert statuses(exchange(server.port, MANY_FIELDS)) == [431]
    assert statuses(exchange(server.port, LARGE_FIELD)) == [431]
    assert server.get().text == worker  # the same worker: none was restarted
    refused = "wsgipool_requests_refused_total"
    assert metric(server, refused, status="405", reason="connect") == 20
    assert metric(server, refused, status="414", reason="request_line") == 1
    assert metric(server, refused, status="431", reason="fields") == 1
    assert metric(server, refused, status="431", reason="field_size") == 1
    framing = {"httptools": "invalid", "h11": "framing"}[parser]  # llhttp refuses it itself
    assert metric(server, refused, status="400", reason=framing) == 1
    page = server.admin("/-/status").text
    assert "405 connect: 20" in page
    assert "414 request_line: 1" in page
    log = server.output()
    assert log.count("refused 405 from") == 1  # rate-limited: one line for 20 refusals
    assert "Traceback" not in log


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("parser", PARSERS)
def test_a_10_mb_header_line_is_never_buffered(front: Callable[..., Front], parser: str) -> None:
    server = serve(front, parser)
    before = rss_of(server.proc.pid)
    line = b"GET / HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"a" * (10 << 20) + b"\r\n\r\n"
    answers: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: answers.append(exchange(server.port, line)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [statuses(answer) for answer in answers] == [[431]] * 8
    assert rss_of(server.proc.pid) - before < 16 << 20  # 8 requests of 10 MB each


@pytest.mark.parametrize("parser", PARSERS)
def test_a_refused_head_is_read_by_a_client_that_sends_it_whole(
    front: Callable[..., Front], parser: str
) -> None:
    # The client writes all of its 4 MB head before it reads: the answer must still be
    # there (the connection lingers and drops what comes), not lost to a reset.
    server = serve(front, parser)
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"a" * (4 << 20) + b"\r\n\r\n"
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
            sock.sendall(head)  # a reset would fail here or in the reads below
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
            assert statuses(received) == [431]
    assert server.get().status_code == 200


@pytest.mark.parametrize("parser", PARSERS)
def test_a_pipelined_oversized_head_is_refused(front: Callable[..., Front], parser: str) -> None:
    server = serve(front, parser)
    huge = b"GET /" + b"a" * (2 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = statuses(exchange(server.port, GET + huge))
    # The first is answered unless the refusal came first (then the connection is only
    # closed: a refusal never interleaves with a response); the second never is.
    refused = [[], [400], [414], [431]]
    assert answer in refused + [[200, *codes] for codes in refused]


# -- hostile requests: other servers running the adapter -----------------------------------


def host_command(kind: str, port: int) -> list[str]:
    if kind == "granian":
        return [
            sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--no-log", "edge_app:app",
        ]  # fmt: skip
    backend = kind.split("-")[1]
    return [
        sys.executable, "-m", "hypercorn", "--worker-class", backend,
        "-b", f"127.0.0.1:{port}", "edge_app:app",
    ]  # fmt: skip


@pytest.fixture(params=["hypercorn-asyncio", "hypercorn-trio", "granian"])
def host(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[int]:
    """The adapter (one worker) under another ASGI server; its port."""
    (tmp_path / "edge_app.py").write_text(
        "from wsgipool import WsgiToAsgi\napp = WsgiToAsgi('apps:pid', workers=1)\n"
    )
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(TESTS), *sys.path])}
    log = open(tmp_path / "host.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        host_command(str(request.param), port), cwd=tmp_path, env=env, stdout=log, stderr=log
    )

    def up() -> bool:
        assert proc.poll() is None, (tmp_path / "host.log").read_text()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, 30, f"{request.param} to serve")
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()


def test_other_servers_refuse_the_same_requests(host: int) -> None:
    worker = httpx.get(f"http://127.0.0.1:{host}/").text
    smuggled = statuses(exchange(host, SMUGGLE))
    # hypercorn: the adapter's 400 (hypercorn on trio may drop the connection instead);
    # Granian serves the chunked framing and closes: the smuggled request is never served.
    assert smuggled in ([400], [], [200])
    for _ in range(5):
        response = exchange(host, CONNECT)
        assert statuses(response) == [405]
        assert b"allow: get, head, post" in response.lower()
    assert statuses(exchange(host, LONG_LINE)) in ([414], [400])  # or the server's own
    assert statuses(exchange(host, MANY_FIELDS)) in ([431], [400])
    assert statuses(exchange(host, LARGE_FIELD)) in ([431], [400])
    assert httpx.get(f"http://127.0.0.1:{host}/").text == worker  # no worker restarted


# -- TLS ------------------------------------------------------------------------------------


def wait_until_served(server: Front, url: str, context: ssl.SSLContext) -> None:
    """Until the HTTPS front answers its readiness probe (its process still running)."""

    def up() -> bool:
        assert server.proc.poll() is None, server.output()
        try:
            return httpx.get(url + "/-/readyz", verify=context, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 30, "the HTTPS front")


def test_tls_with_a_certificate_made_here(front: Callable[..., Front], tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile, cafile = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    server = front(
        "apps:pid", "-w", "1", "--certfile", str(certfile), "--keyfile", str(keyfile), "--status"
    )  # with an admin listener, plain, started during the lifespan
    url = server.url.replace("http://", "https://")
    context = ssl.create_default_context(cafile=str(cafile))
    wait_until_served(server, url, context)
    with httpx.Client(verify=context, timeout=30) as client:
        response = client.get(url + "/")
        assert response.status_code == 200
        assert int(response.text) != os.getpid()
    with pytest.raises(httpx.ConnectError):  # a client that does not trust the CA
        httpx.get(url + "/", timeout=10)
    assert f"on {url} with 1 workers" in server.output()
    assert server.admin("/-/status").status_code == 200
    assert server.stop() == 0


def test_a_tls_handshake_is_bounded_as_a_head_is(
    front: Callable[..., Front], tmp_path: Path
) -> None:
    """A connection that never finishes its handshake is closed after header_timeout,
    not asyncio's 60 s."""
    cert = trustme.CA().issue_cert("127.0.0.1")
    certfile = tmp_path / "cert.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    server = front("apps:pid", "-w", "1", "--certfile", str(certfile), "--header-timeout", "1")
    wait_for(lambda: "serving apps:pid" in server.output(), 30, "the HTTPS front")
    silent, partial = Peer(server.port), Peer(server.port)
    partial.send(b"\x16\x03\x01")  # the start of a ClientHello, never finished
    assert silent.read_all() == b""  # within the socket's 15 s
    assert partial.read_all() == b""
    silent.close()
    partial.close()


def test_tls_client_certificates(front: Callable[..., Front], tmp_path: Path) -> None:
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    certfile, cafile = tmp_path / "server.pem", tmp_path / "ca.pem"
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    ca.cert_pem.write_to_path(str(cafile))
    server = front(
        "apps:pid", "-w", "1", "--certfile", str(certfile), "--ca-certs", str(cafile),
        "--cert-reqs", "required",
    )  # fmt: skip
    url = server.url.replace("http://", "https://")
    with_cert = ssl.create_default_context(cafile=str(cafile))
    ca.issue_cert("client@example.com").configure_cert(with_cert)
    without = ssl.create_default_context(cafile=str(cafile))
    wait_until_served(server, url, with_cert)
    assert httpx.get(url + "/", verify=with_cert, timeout=30).status_code == 200
    with pytest.raises(httpx.TransportError):  # no client certificate: no request
        httpx.get(url + "/", verify=without, timeout=10)
    assert server.stop() == 0


def test_tls_flags_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wsgipool._cli.main import main

    assert main(["serve", "apps:pid", "--keyfile", "k.pem"]) == 2
    assert "--keyfile and --ca-certs need --certfile" in capsys.readouterr().err
    assert main(["serve", "apps:pid", "--certfile", str(tmp_path / "none.pem")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["serve", "apps:pid", "--cert-reqs", "sometimes"]) == 2
    assert main(["serve", "apps:pid", "--header-timeout", "0"]) == 2
    assert "invalid header_timeout" in capsys.readouterr().err
