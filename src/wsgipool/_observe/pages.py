"""What the front answers about itself, under ``/-/``: probes, metrics, a status page.

* ``health``: ``/-/healthz`` is 200 while the front's event loop runs; ``/-/readyz`` is
  200 while at least one worker is up (idle or busy) and the pool is not shutting down,
  else 503. Both bodies are a small JSON summary of the pool.
* ``metrics``: Prometheus text at ``metrics_path``, from a registry of this adapter's own
  (several adapters in one process never share or clash), built with prometheus-client.
* ``status``: ``/-/status``, one HTML page about the workers, for people.

The front answers these itself, never a worker, so they work while every worker is busy.
Paths are matched below ``root_path``, as the app's own paths are.

The status page and the metrics show what runs inside (pids, memory, the app's last
import error), and so do the probes' bodies. A library user serves them on the app's
own port and restricts them there; ``wsgipool serve`` makes them :attr:`private
<Observer.private_pages>`: the app's port keeps only the probes, with bare bodies, and
everything is answered in full on the admin listener (:mod:`wsgipool._serve.admin`).
"""

from __future__ import annotations

import html
import json
import os
import time
from collections.abc import Callable

from .._front.budget import BufferBudget
from .._front.guard import Refusals
from .._pool.pool import Pool
from .._pool.stats import PoolStats, WorkerInfo, rss_of
from .._types import Scope, Send
from .metrics import Answer, Metrics, Timing

HEALTH = "/-/healthz"
READY = "/-/readyz"
STATUS = "/-/status"


def observer_for(
    pool: Pool,
    label: str,
    refusals: Refusals | None = None,
    budget: BufferBudget | None = None,
) -> Observer | None:
    """An observer if the pool's config enables any ``/-/`` endpoint, else None."""
    config = pool.config
    if not (config.health or config.metrics or config.status):
        return None
    return Observer(
        pool, label, Refusals() if refusals is None else refusals, budget or BufferBudget(0)
    )


def relative_path(scope: Scope) -> str:
    """The request path below ``root_path`` (cut only at a path-segment boundary)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :] or "/"
    return path


def readiness(stats: PoolStats) -> dict[str, object]:
    """A small summary of the pool: the body of the probe responses."""
    return {
        "workers": len(stats.workers),
        "idle": len(stats.idle),
        "busy": len(stats.busy),
        "starting": stats.starting,
        "waiting": stats.waiting,
        "closing": stats.closing,
        "last_error": stats.last_error,
    }


class Observer:
    """Answers the ``/-/`` endpoints the config enables and times every other request."""

    def __init__(self, pool: Pool, label: str, refusals: Refusals, budget: BufferBudget) -> None:
        config = pool.config
        self.pool = pool
        self.label = label
        self.refusals = refusals
        self.budget = budget
        self.started_at = time.time()
        #: Each path and its page; a page is given whether it may show details.
        self.routes: dict[str, Callable[[bool], Answer]] = {}
        #: The status page and the metrics only on the admin listener, the probes' bodies
        #: there alone in full (see the module's docstring).
        self.private_pages = False
        if config.health:
            self.routes[HEALTH] = lambda details: self.probe(True, details)
            self.routes[READY] = lambda details: self.probe(self.ready(), details)
        if config.status:
            self.routes[STATUS] = lambda details: self.status_page()
        self.metrics: Metrics | None = None
        if config.metrics:
            self.metrics = Metrics(pool, refusals, budget)
            metrics = self.metrics
            self.routes[config.metrics_path] = lambda details: metrics.render()

    async def answer(self, scope: Scope, send: Send, admin: bool = False) -> bool:
        """Answer ``scope`` if its path is one of ours; False lets the app have it.
        ``admin``: asked on the admin listener, where every page is answered in full."""
        path = relative_path(scope)
        route = self.routes.get(path)
        private = self.private_pages and not admin
        if route is None or (private and path not in (HEALTH, READY)):
            return False
        method = scope.get("method", "GET")
        if method in ("GET", "HEAD"):
            status, kind, body = route(not private)
        else:
            status, kind, body = 405, "text/plain", b""
        headers = [
            (b"content-type", kind.encode()),
            (b"content-length", b"%d" % len(body)),
            (b"cache-control", b"no-store"),
        ]
        if status == 405:
            headers.append((b"allow", b"GET, HEAD"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
        return True

    def timed(self, send: Send) -> Timing | None:
        """A timing of one response (None without metrics)."""
        if self.metrics is None:
            return None
        return self.metrics.timed(send)

    def ready(self) -> bool:
        return bool(self.pool.up) and not self.pool.closing

    def probe(self, ok: bool, details: bool = True) -> Answer:
        body: dict[str, object] = {"status": "ok" if ok else "unavailable"}
        if details:
            body.update(readiness(self.pool.stats()))
        return (200 if ok else 503), "application/json", json.dumps(body).encode()

    def status_page(self) -> Answer:
        return 200, "text/html; charset=utf-8", render_status(self).encode()


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="5">
<title>wsgipool: {app}</title>
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }}
h1 {{ font-size: 1.4em; }} code {{ background: #f2f2f2; padding: 0 .3em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border-bottom: 1px solid #ddd; padding: .35em .9em; text-align: right; }}
th {{ background: #f6f6f6; }} td.state, td.request {{ text-align: left; }}
.idle {{ color: #2a7a2a; }} .busy {{ color: #b36b00; }} .retiring {{ color: #888; }}
</style></head>
<body>
<h1>wsgipool serving <code>{app}</code></h1>
<p id="summary">Front pid {pid}, up {uptime}: {up} of {target} workers up, {starting} starting,
{waiting} request(s) waiting{closing}.</p>
<table id="workers">
<tr><th>worker</th><th>pid</th><th>state</th><th>requests</th><th>RSS</th><th>uptime</th>
<th>now serving</th><th>client</th><th>for</th></tr>
{rows}
</table>
<p id="stacks">The stacks of the busy workers go to the log on
<code>WsgiToAsgi.log_stacks()</code>; under <code>wsgipool serve</code>, on
<code>kill -USR1 {pid}</code>.</p>
<p id="restarts">Workers replaced: {restarts}.</p>
<p id="refused">Requests refused: {refused}. Connections closed: {closed}.</p>
<p id="buffered">Bodies held for slow clients: {memory} in memory, {disk} on disk
(at most {memory_limit} in memory, {disk_limit} on disk).</p>
</body></html>
"""
_ROW = (
    '<tr><td>{id}</td><td>{pid}</td><td class="state {state}">{state}</td>'
    "<td>{requests}</td><td>{rss}</td><td>{uptime}</td>"
    '<td class="request"><code>{request}</code></td><td>{client}</td><td>{busy}</td></tr>'
)


def duration(seconds: float) -> str:
    """``3725`` -> ``"1h 2m 5s"``."""
    hours, rest = divmod(int(seconds), 3600)
    parts = [f"{hours}h"] if hours else []
    if hours or rest >= 60:
        parts.append(f"{rest // 60}m")
    parts.append(f"{rest % 60}s")
    return " ".join(parts)


def mebibytes(size: int | None) -> str:
    return "?" if size is None else f"{size / (1 << 20):.1f} MiB"


def _row(worker: WorkerInfo, now: float) -> str:
    return _ROW.format(
        id=worker.id,
        pid=worker.pid,
        state=worker.state,
        requests=worker.requests,
        rss=mebibytes(rss_of(worker.pid)),
        uptime=duration(now - worker.started_at),
        request=html.escape(worker.request),
        client=html.escape(worker.client),
        busy=f"{now - worker.busy_since:.1f}s" if worker.request else "",
    )


def render_status(observer: Observer) -> str:
    stats, now = observer.pool.stats(), time.monotonic()
    rows = [_row(worker, now) for worker in stats.workers]
    restarts = ", ".join(f"{html.escape(k)}: {v}" for k, v in sorted(stats.restarts.items()))
    refusals = observer.refusals
    refused = ", ".join(f"{s} {r}: {n}" for (s, r), n in sorted(refusals.requests.items()))
    closed = ", ".join(f"{r}: {n}" for r, n in sorted(refusals.connections.items()))
    return _PAGE.format(
        app=html.escape(observer.label),
        pid=os.getpid(),
        uptime=duration(time.time() - observer.started_at),
        up=len(stats.workers),
        target=stats.target,
        starting=stats.starting,
        waiting=stats.waiting,
        closing=", shutting down" if stats.closing else "",
        rows="\n".join(rows) or '<tr><td colspan="9">no worker is up</td></tr>',
        restarts=restarts or "none",
        refused=html.escape(refused or "none"),
        closed=html.escape(closed or "none"),
        memory=mebibytes(observer.budget.used),
        disk=mebibytes(observer.budget.on_disk),
        memory_limit=mebibytes(observer.budget.limit),
        disk_limit=_bound(observer.budget.disk_limit),
    )


def _bound(size: int | None) -> str:
    return "no bound" if size is None else mebibytes(size)
