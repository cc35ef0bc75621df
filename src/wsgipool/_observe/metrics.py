"""The front's Prometheus metrics: a registry per adapter, read at scrape time.

Counters the pool and the front keep anyway (restarts, refusals, bytes held) are read
by collectors when Prometheus scrapes, so a request pays nothing for them; only the
request count and latency are recorded per response (:class:`Timing`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from .._errors import ConfigError
from .._front.budget import BufferBudget
from .._front.guard import Refusals
from .._pool.pool import Pool
from .._pool.stats import PoolStats, rss_of
from .._types import Message, Send

#: A page: status, content type, body.
Answer = tuple[int, str, bytes]
#: Upper bounds (seconds) of the request latency histogram's buckets.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Prometheus metrics of one adapter, in a registry of its own."""

    def __init__(self, pool: Pool, refusals: Refusals, budget: BufferBudget) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Histogram
        except ImportError as exc:
            raise ConfigError(
                "metrics=True needs prometheus-client: pip install 'wsgipool[metrics]'"
            ) from exc
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "wsgipool_requests", "Responses sent, by status class", ["status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "wsgipool_request_duration_seconds",
            "Seconds from the request's arrival to the last chunk of its response",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(PoolCollector(pool))
        self.registry.register(FrontCollector(refusals, budget))

    def timed(self, send: Send) -> Timing:
        return Timing(self, send)

    def render(self) -> Answer:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)


class Timing:
    """Counts one response and its latency once its last chunk is sent, or once the call
    raised (the server then answers 500 or cuts the response off)."""

    __slots__ = ("_metrics", "_send", "_started", "_status", "counted")

    def __init__(self, metrics: Metrics, send: Send) -> None:
        self._metrics = metrics
        self._send = send
        self._started = time.perf_counter()
        self._status = 0
        self.counted = False

    async def send(self, message: Message) -> None:
        await self._send(message)
        kind = message["type"]
        if kind == "http.response.start":
            self._status = int(message["status"])
        elif kind == "http.response.body" and not message.get("more_body", False):
            self._count(self._status)

    def failed(self) -> None:
        self._count(500)

    def _count(self, status: int) -> None:
        if not self.counted:
            self.counted = True
            self._metrics.requests.labels(f"{status // 100}xx").inc()
            self._metrics.latency.observe(time.perf_counter() - self._started)


class PoolCollector:
    """Reads the pool at scrape time: queue, workers, restarts, memory."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def describe(self) -> list[Any]:
        return []  # nothing to check for clashes: the registry is ours alone

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.pool.stats()
        yield GaugeMetricFamily(
            "wsgipool_queue_depth", "Requests waiting for a free worker", value=stats.waiting
        )
        workers = GaugeMetricFamily(
            "wsgipool_workers", "Worker processes by state", labels=["state"]
        )
        workers.add_metric(["idle"], len(stats.idle))
        workers.add_metric(["busy"], len(stats.busy))
        workers.add_metric(["starting"], stats.starting)
        yield workers
        yield GaugeMetricFamily(
            "wsgipool_workers_target", "Worker processes the pool keeps up", value=stats.target
        )
        busy = self.pool.busy_time
        yield GaugeMetricFamily(
            "wsgipool_workers_max", "Worker processes the pool may run (its capacity)",
            value=busy.capacity,
        )  # fmt: skip
        yield CounterMetricFamily(
            "wsgipool_worker_busy_seconds",
            "Worker-seconds spent on requests, from each request's dispatch to its worker's "
            "release",
            value=busy.total(),
        )
        yield GaugeMetricFamily(
            "wsgipool_utilization",
            f"Busy worker-seconds over capacity (workers_max) in the last {busy.window} s",
            value=busy.recent(),
        )
        restarts = CounterMetricFamily(
            "wsgipool_worker_restarts", "Workers replaced, by reason", labels=["reason"]
        )
        for reason, count in sorted(stats.restarts.items()):
            restarts.add_metric([reason], count)
        yield restarts
        rss = GaugeMetricFamily(
            "wsgipool_worker_rss_bytes", "Resident memory of each worker", labels=["worker", "pid"]
        )
        for worker in stats.workers:
            size = rss_of(worker.pid)
            if size is not None:
                rss.add_metric([str(worker.id), str(worker.pid)], size)
        yield rss
        yield from _events(stats)


#: The pool's counted events as metrics: (kind, name, help, label).
_EVENTS = (
    ("stacks", "wsgipool_stack_dumps", "Stacks of busy workers logged, by why", "reason"),
    ("interrupts", "wsgipool_timeout_interrupts",
     "Requests interrupted at their timeout (timeout_grace), by outcome", "outcome"),
    ("deaths", "wsgipool_worker_deaths",
     "Workers that died on their own or were killed from outside, by cause (oom, sigkill, "
     "sigsegv, exit...)", "cause"),
)  # fmt: skip


def _events(stats: PoolStats) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily

    for kind, name, text, label in _EVENTS:
        family = CounterMetricFamily(name, text, labels=[label])
        for (event, value), count in sorted(stats.events.items()):
            if event == kind:
                family.add_metric([value], count)
        yield family


class FrontCollector:
    """Reads what the front itself counts at scrape time: the requests it refused, the
    connections it closed, and the bytes of bodies it holds for slow clients."""

    def __init__(self, refusals: Refusals, budget: BufferBudget) -> None:
        self.refusals = refusals
        self.budget = budget

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        requests = CounterMetricFamily(
            "wsgipool_requests_refused",
            "Requests refused before the app saw them, by status and reason",
            labels=["status", "reason"],
        )
        for (status, reason), count in sorted(self.refusals.requests.items()):
            requests.add_metric([str(status), reason], count)
        yield requests
        connections = CounterMetricFamily(
            "wsgipool_connections_closed",
            "Connections the server closed for slowness or a limit, by reason",
            labels=["reason"],
        )
        for reason, count in sorted(self.refusals.connections.items()):
            connections.add_metric([reason], count)
        yield connections
        held = GaugeMetricFamily(
            "wsgipool_buffered_bytes",
            "Bytes of request and response bodies held for slow clients now, by where",
            labels=["where"],
        )
        held.add_metric(["memory"], self.budget.used)
        held.add_metric(["disk"], self.budget.on_disk)
        yield held
        bound = GaugeMetricFamily(
            "wsgipool_buffer_limit_bytes",
            "Bytes of bodies the front may hold for slow clients, by where (no disk sample: "
            "no bound)",
            labels=["where"],
        )
        bound.add_metric(["memory"], self.budget.limit)
        if self.budget.disk_limit is not None:
            bound.add_metric(["disk"], self.budget.disk_limit)
        yield bound
