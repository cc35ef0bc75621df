"""Supervision of the worker processes: spawn, dispatch, queue, replace, shut down.

The pool works with or without a host task. Under ASGI lifespan it starts every worker
up front and runs :meth:`Pool.supervise` in the lifespan task, which replaces dead workers
at once. Without lifespan the pool grows lazily: a request that finds no idle worker and
spare capacity starts one itself, and dead or retired workers are noticed on the next
dispatch. Exited processes are reaped by polling, never by signal handlers.
"""

from __future__ import annotations

import logging
import random
import signal
import sys
import time
import weakref
from collections import deque
from typing import Any

import anyio

from ._config import Config
from ._errors import AppLoadError, OverloadedError, PoolClosedError, WorkerError
from ._loader import AppSpec
from ._process import WorkerProcess, describe_exit

log = logging.getLogger("wsgipool.pool")

#: How often the supervisor looks at its workers when nothing wakes it earlier.
TICK = 0.1
#: Seconds between SIGTERM and SIGKILL for a worker being killed.
KILL_GRACE = 2.0
MAX_BACKOFF = 30.0


class _Waiter:
    """A request queued for a worker; ``worker`` is None when woken only to retry."""

    __slots__ = ("event", "worker")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.worker: WorkerProcess | None = None


def _kill_all(workers: set[WorkerProcess]) -> None:
    for worker in list(workers):
        worker.kill_now()
    workers.clear()


class Pool:
    """A fixed number of worker processes serving one app, one request each at a time."""

    def __init__(self, spec: AppSpec, config: Config) -> None:
        self.spec = spec
        self.config = config
        self.target = config.workers
        self.idle: list[WorkerProcess] = []
        self.busy: set[WorkerProcess] = set()
        self.exiting: dict[WorkerProcess, float] = {}  # worker -> when to SIGKILL
        self.starting = 0
        self.closing = False
        self.failures = 0
        self.backoff_until = 0.0
        self.restarts: dict[str, int] = {}
        self._waiters: deque[_Waiter] = deque()
        self._all: set[WorkerProcess] = set()
        self._free_ids: list[int] = []
        self._next_id = 1
        self._finalizer = weakref.finalize(self, _kill_all, self._all)

    # -- capacity ---------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Workers alive or on their way up (what counts against ``workers``)."""
        return len(self.idle) + len(self.busy) + self.starting

    def _hello(self, worker_id: int) -> dict[str, Any]:
        return {
            "app": self.spec,
            "sys_path": list(sys.path),
            "worker_id": worker_id,
            "log_level": self.config.log_level.upper(),
        }

    def _take_id(self) -> int:
        if self._free_ids:
            return self._free_ids.pop()
        self._next_id += 1
        return self._next_id - 1

    async def _spawn(self) -> WorkerProcess:
        """Start one worker and wait until it is ready (counted in ``starting`` meanwhile)."""
        self.starting += 1
        worker_id = self._take_id()
        worker = None
        try:
            worker = WorkerProcess.spawn(worker_id, self._hello(worker_id), None)
            self._all.add(worker)
            await worker.ready(self.config.startup_timeout)
        except BaseException as exc:
            if worker is not None:
                self._forget(worker)
                worker.kill_now()
            else:
                self._free_ids.append(worker_id)
            if isinstance(exc, (AppLoadError, WorkerError, OSError, TimeoutError)):
                self._note_failure(exc)
            raise
        finally:
            self.starting -= 1
        self.failures = 0
        if self.config.max_requests:
            worker.request_limit = self.config.max_requests + jitter(self.config.max_requests_jitter)
        log.info("worker %d started (pid %d)", worker.id, worker.pid)
        return worker

    def _note_failure(self, exc: BaseException) -> None:
        self.failures += 1
        delay = min(0.1 * 2 ** (self.failures - 1), MAX_BACKOFF)
        self.backoff_until = time.monotonic() + delay
        log.error("worker failed to start (%s); next attempt in %.1fs", exc, delay)

    def _forget(self, worker: WorkerProcess) -> None:
        self._all.discard(worker)
        self.busy.discard(worker)
        if worker in self.idle:
            self.idle.remove(worker)
        self._free_ids.append(worker.id)

    # -- start and dispatch -----------------------------------------------------------

    async def start(self) -> None:
        """Start every worker; the first one that fails to load the app fails the start."""
        self.closing = False
        errors: list[Exception] = []
        async with anyio.create_task_group() as tg:
            for _ in range(self.target - self.size):
                tg.start_soon(self._spawn_idle, errors)
        if errors:
            raise errors[0]

    async def _spawn_idle(self, errors: list[Exception] | None = None) -> None:
        try:
            self._offer(await self._spawn())
        except (AppLoadError, WorkerError, OSError, TimeoutError) as exc:
            if errors is None:
                return  # logged and backed off in _spawn
            errors.append(exc)

    async def acquire(self) -> WorkerProcess:
        """A worker for one request: idle now, started for us, or after waiting in the queue."""
        while True:
            if self.closing:
                raise PoolClosedError("the server is shutting down")
            self.reap()
            while self.idle:
                worker = self.idle.pop()
                if worker.alive():
                    self.busy.add(worker)
                    return worker
                self._lost(worker, "died while idle")
            if self.size < self.target and time.monotonic() >= self.backoff_until:
                worker = await self._spawn()
                self.busy.add(worker)
                return worker
            worker = await self._queue()
            if worker is not None:
                return worker

    async def _queue(self) -> WorkerProcess | None:
        if len(self._waiters) >= self.config.backlog:
            raise OverloadedError(f"{len(self._waiters)} requests already waiting")
        waiter = _Waiter()
        self._waiters.append(waiter)
        delay = self.config.queue_timeout
        if self.size < self.target:  # capacity is owed but backing off: retry then
            delay = min(delay or MAX_BACKOFF, max(self.backoff_until - time.monotonic(), 0.01))
        try:
            with anyio.move_on_after(delay):
                await waiter.event.wait()
        except BaseException:
            if waiter.worker is not None:  # handed a worker just as we were cancelled
                self.release(waiter.worker)
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        if waiter.worker is None and not waiter.event.is_set() and self.size >= self.target:
            raise OverloadedError("no worker became free within queue_timeout")
        return waiter.worker

    def _offer(self, worker: WorkerProcess) -> None:
        """Give a free worker to the longest-waiting request, or park it as idle."""
        while self._waiters:
            waiter = self._waiters.popleft()
            waiter.worker = worker
            self.busy.add(worker)
            waiter.event.set()
            return
        self.idle.append(worker)

    def _wake_one(self) -> None:
        """Capacity was lost: let the first waiter retry (it may start a worker itself)."""
        if self._waiters:
            self._waiters.popleft().event.set()

    # -- after a request --------------------------------------------------------------

    def release(self, worker: WorkerProcess) -> None:
        """The request finished cleanly; recycle the worker if it has served enough."""
        self.busy.discard(worker)
        worker.requests += 1
        if worker.request_limit and worker.requests >= worker.request_limit:
            self.retire(worker, "max_requests")
        elif self.closing:
            self.idle.append(worker)
        else:
            self._offer(worker)

    def retire(self, worker: WorkerProcess, reason: str) -> None:
        """Let a worker exit on its own (pipe EOF) and count the restart."""
        log.info("worker %d (pid %d) recycled: %s", worker.id, worker.pid, reason)
        self._count(reason)
        self._forget(worker)
        worker.close_pipes()
        self.exiting[worker] = time.monotonic() + KILL_GRACE + 5.0
        self._wake_one()

    def discard(self, worker: WorkerProcess, reason: str, sigterm: bool = False) -> None:
        """Kill a broken or stuck worker (its whole process group) and count the restart."""
        self._count(reason)
        self._forget(worker)
        if worker.alive():
            worker.signal_group(signal.SIGTERM if sigterm else signal.SIGKILL)
            log.warning("worker %d (pid %d) killed: %s", worker.id, worker.pid, reason)
        worker.close_pipes()
        self.exiting[worker] = time.monotonic() + (KILL_GRACE if sigterm else 0.0)
        self._wake_one()

    def _lost(self, worker: WorkerProcess, why: str) -> None:
        code = worker.popen.poll()
        log.error("worker %d (pid %d) %s (%s)", worker.id, worker.pid, why, describe_exit(code))
        self._count("died")
        self._forget(worker)
        worker.close_pipes()
        self.exiting[worker] = time.monotonic()

    def _count(self, reason: str) -> None:
        self.restarts[reason] = self.restarts.get(reason, 0) + 1

    def reap(self) -> None:
        """Collect exited workers; SIGKILL the ones past their grace."""
        now = time.monotonic()
        for worker, kill_at in list(self.exiting.items()):
            code = worker.popen.poll()
            if code is not None:
                del self.exiting[worker]
                log.info("worker %d (pid %d) exited (%s)", worker.id, worker.pid, describe_exit(code))
            elif now >= kill_at:
                worker.signal_group(signal.SIGKILL)

    # -- background supervision and shutdown ------------------------------------------

    async def supervise(self) -> None:
        """Keep the pool at full size: replace dead workers, with back-off on failures."""
        while not self.closing:
            self.reap()
            for worker in list(self.idle):
                if not worker.alive():
                    self._lost(worker, "died while idle")
            missing = self.target - self.size
            if missing > 0 and time.monotonic() >= self.backoff_until:
                async with anyio.create_task_group() as tg:
                    for _ in range(missing):
                        tg.start_soon(self._spawn_idle)
            await anyio.sleep(TICK)

    async def aclose(self) -> None:
        """Stop taking requests, let busy workers finish (graceful_timeout), stop all."""
        self.closing = True
        while self._waiters:
            self._waiters.popleft().event.set()
        grace = self.config.graceful_timeout
        with anyio.move_on_after(grace):
            while self.busy or self.starting:
                await anyio.sleep(0.01)
        workers = list(self.idle) + list(self.busy) + list(self.exiting)
        async with anyio.create_task_group() as tg:
            for worker in workers:
                tg.start_soon(self._stop, worker)
        self.exiting.clear()

    async def _stop(self, worker: WorkerProcess) -> None:
        busy = worker in self.busy
        self._forget(worker)
        code = await worker.stop(grace=0.0 if busy else KILL_GRACE)
        log.info("worker %d (pid %d) stopped (%s)", worker.id, worker.pid, describe_exit(code))

    def kill_all(self) -> None:
        """Synchronous emergency stop (no event loop needed)."""
        self._finalizer()


def jitter(limit: int) -> int:
    return random.randint(0, limit) if limit > 0 else 0
