"""nginx in front of gunicorn: the setup that ``wsgipool serve`` replaces.

gunicorn's sync workers are only safe behind a buffering proxy (a slow client holds a sync
worker for as long as it takes), so the usual deployment is nginx ``proxy_pass`` to gunicorn
on a unix socket with nginx's default buffering. Both run as the current user from a
generated ``nginx.conf`` in a temporary directory (``-p`` prefix, ``daemon off``, the error
log and every temp path inside it), so the benchmark needs no root and leaves nothing behind.
"""

from __future__ import annotations

import getpass
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from bench.procs import gunicorn_command, serving

NGINX = "/usr/sbin/nginx"

CONF = """\
{user}worker_processes auto;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type application/octet-stream;
    client_max_body_size 0;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream app {{ server unix:{root}/gunicorn.sock; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


def installed() -> str | None:
    """The nginx binary, or None (the contender is then skipped with a note)."""
    if os.access(NGINX, os.X_OK):
        return NGINX
    return shutil.which("nginx")


def config(root: Path, port: int) -> str:
    """nginx.conf for a server on ``port`` whose files all live under ``root``.

    As root, nginx would switch its workers to ``nobody``, who cannot reach the socket in
    a private temporary directory: they stay the current user instead.
    """
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
    return CONF.format(user=user, root=root, port=port)


@contextmanager
def serving_pair(
    app: str, port: int, workers: int, log: Path, env: Mapping[str, str] | None = None
) -> Iterator[tuple[int, int, str]]:
    """gunicorn on a unix socket and nginx on ``port``: (nginx pid, gunicorn pid, base URL)."""
    binary = installed()
    if binary is None:
        raise RuntimeError("nginx is not installed (apt-get install -y nginx)")
    with tempfile.TemporaryDirectory(prefix="wsgipool-nginx-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        (root / "nginx.conf").write_text(config(root, port))
        sock = root / "gunicorn.sock"
        backend = gunicorn_command(app, port, workers)
        backend[backend.index("--bind") + 1] = f"unix:{sock}"
        conf, errors = root / "nginx.conf", root / "error.log"
        proxy = [binary, "-p", str(root), "-c", str(conf), "-e", str(errors)]
        gunicorn_log = log.with_name(log.stem + "-gunicorn.log")
        with (
            serving(backend, 0, gunicorn_log, env, ready=sock.exists) as (gpid, _),
            serving(proxy, port, log, env) as (npid, url),
        ):
            yield npid, gpid, url
