"""Supervision of the worker processes: spawn, dispatch, queue, recycle, replace, stop.

The pool works with or without a host task. Under ASGI lifespan it starts ``workers``
processes up front and the lifespan task runs :func:`wsgipool._supervisor.supervise`,
which replaces dead workers at once, recycles old ones and enforces deadlines. Without
lifespan the pool grows lazily: a request that finds no idle worker and spare capacity
starts one itself, and dead or retired workers are noticed on the next dispatch. Exited
processes are reaped by polling, never in signal handlers.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sys
import time
import weakref
from typing import Any

import anyio

from ._config import Config
from ._errors import (
    AppLoadError,
    OverloadedError,
    PoolClosedError,
    WorkerError,
    WorkerGoneError,
)
from ._loader import AppSpec
from ._process import WorkerProcess, describe_exit, resolve_identity
from ._queue import WaitQueue, Watch
from ._template import Template

log = logging.getLogger("wsgipool.pool")

#: Seconds between SIGTERM and SIGKILL for a worker being killed.
KILL_GRACE = 2.0
#: Seconds a retired worker gets to exit on its own before it is killed.
RETIRE_GRACE = 10.0
MAX_BACKOFF = 30.0
_START_ERRORS = (AppLoadError, WorkerError, OSError, TimeoutError)


def _kill_all(workers: set[WorkerProcess]) -> None:
    for worker in list(workers):
        worker.kill_now()
    workers.clear()


def _jitter(limit: float) -> float:
    return random.uniform(0, limit) if limit > 0 else 0.0


def rss_of(pid: int) -> int | None:
    """Resident memory of ``pid`` in bytes (Linux ``/proc``; None elsewhere or if gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class Pool:
    """Worker processes serving one app, one request each at a time."""

    def __init__(self, spec: AppSpec, config: Config) -> None:
        self.spec = spec
        self.config = config
        self.target = config.workers
        self.limit = config.max_workers or config.workers
        self.identity = resolve_identity(config.user, config.group)
        self.idle: list[WorkerProcess] = []
        self.busy: set[WorkerProcess] = set()
        self.retiring: set[WorkerProcess] = set()  # busy, replaced once they finish
        self.exiting: dict[WorkerProcess, float] = {}  # stopped, reaped by -> deadline
        self.starting = 0
        self.closing = False
        self.supervised = False  # _supervisor.supervise() runs: it enforces deadlines
        self.failures = 0
        self.backoff_until = 0.0
        self.last_error: str | None = None
        self.restarts: dict[str, int] = {}
        self.template: Template | None = None
        self.old_templates: list[Template] = []
        self._template_starting = False
        self.waiters = WaitQueue()
        self._all: set[WorkerProcess] = set()
        self._free_ids: list[int] = []
        self._next_id = 1
        self._finalizer = weakref.finalize(self, _kill_all, self._all)

    # -- capacity -------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Workers that count against ``workers``: alive, not retiring, or on their way up."""
        return len(self.idle) + len(self.busy) - len(self.retiring) + self.starting

    @property
    def waiting(self) -> int:
        return len(self.waiters)

    def _hello(self, worker_id: int) -> dict[str, Any]:
        hello: dict[str, Any] = {
            "app": self.spec,
            "sys_path": list(sys.path),
            "worker_id": worker_id,
            "log_level": self.config.log_level.upper(),
        }
        if self.identity is not None:
            hello["uid"], hello["gid"] = self.identity
        return hello

    def _env(self) -> dict[str, str] | None:
        allowed = self.config.worker_env
        if allowed is None:
            return None
        return {name: os.environ[name] for name in allowed if name in os.environ}

    def _take_id(self) -> int:
        if self._free_ids:
            return self._free_ids.pop(self._free_ids.index(min(self._free_ids)))
        self._next_id += 1
        return self._next_id - 1

    async def _spawn(self) -> WorkerProcess:
        """Start one worker and wait until it is ready (counted in ``starting`` meanwhile)."""
        self.starting += 1
        worker_id = self._take_id()
        worker = None
        try:
            if self.config.preload:
                worker = await (await self._template()).fork(worker_id)
            else:
                worker = WorkerProcess.spawn(worker_id, self._hello(worker_id), self._env())
            self._all.add(worker)
            await worker.ready(self.config.startup_timeout)
        except BaseException as exc:
            if worker is not None:
                self._forget(worker)
                worker.signal_group(signal.SIGKILL)
                worker.close_pipes()
                self.exiting[worker] = time.monotonic()
            else:
                self._free_ids.append(worker_id)
            self.starting -= 1
            if isinstance(exc, (AppLoadError, TimeoutError)):
                self._note_failure(exc)
                self._fail_waiters(exc)
            elif isinstance(exc, _START_ERRORS):
                log.warning("worker %d did not start: %s", worker_id, exc)
            raise
        self.starting -= 1
        self.failures = 0
        self._set_limits(worker)
        log.info("worker %d started (pid %d)", worker.id, worker.pid)
        return worker

    async def _template(self) -> Template:
        """The preload template, started (and awaited) on first use or after it died."""
        while self._template_starting:
            await anyio.sleep(0.005)
        if self.template is not None and self.template.alive():
            return self.template
        self._template_starting = True
        try:
            self.template = await self._start_template()
        finally:
            self._template_starting = False
        return self.template

    async def _start_template(self) -> Template:
        template = Template.start(self._hello(0), self._env())
        self._all.add(template)
        try:
            await template.ready(self.config.startup_timeout)
        except BaseException:
            self._all.discard(template)
            template.kill_now()
            raise
        log.info("preload template started (pid %d)", template.pid)
        return template

    def _set_limits(self, worker: WorkerProcess) -> None:
        config = self.config
        if config.max_requests:
            worker.request_limit = config.max_requests + random.randint(
                0, config.max_requests_jitter
            )
        if config.max_lifetime:
            lifetime = config.max_lifetime + _jitter(config.max_lifetime_jitter)
            worker.expires_at = worker.started_at + lifetime

    def _fail_waiters(self, exc: Exception) -> None:
        """With no worker left to wait for, queued requests get the start-up error now."""
        if not (self.idle or self.busy or self.starting):
            self.waiters.wake_all(exc)

    def _note_failure(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = str(exc)
        delay = min(0.1 * 2 ** (self.failures - 1), MAX_BACKOFF)
        self.backoff_until = time.monotonic() + delay
        log.error("worker failed to start (%s); next attempt in %.1fs", exc, delay)

    def _forget(self, worker: WorkerProcess) -> None:
        self._all.discard(worker)
        self.busy.discard(worker)
        self.retiring.discard(worker)
        if worker in self.idle:
            self.idle.remove(worker)
        if worker.id not in self._free_ids:
            self._free_ids.append(worker.id)

    # -- start and dispatch ---------------------------------------------------------

    async def start(self) -> None:
        """Start ``workers`` processes; if one cannot load the app, the start fails."""
        self.closing = False
        errors: list[Exception] = []
        async with anyio.create_task_group() as tg:
            for _ in range(self.target - self.size):
                tg.start_soon(self.spawn_idle, errors)
        if errors:
            raise errors[0]

    async def spawn_idle(self, errors: list[Exception] | None = None) -> None:
        """Start a worker for the pool (not for a request); the supervisor's replacement."""
        if errors is None and self.size >= self.target:
            return  # a request started one meanwhile
        try:
            self._offer(await self._spawn())
        except _START_ERRORS as exc:
            if errors is not None:
                errors.append(exc)  # else: logged and backed off in _spawn

    async def acquire(self, watch: Watch | None = None) -> WorkerProcess | None:
        """A worker for one request: idle now, started for us, or after queueing.

        While queued the caller's ``watch`` runs; if it returns (the client left), the
        request leaves the queue and the result is None.
        """
        while True:
            if self.closing:
                raise PoolClosedError("the server is shutting down")
            self.reap()
            while self.idle:
                worker = self.idle.pop()
                # Supervised, a death shows as a broken pipe (and the request is retried on
                # another worker) or at the next tick: no wait4() per request.
                if not worker.reader.broken and (self.supervised or worker.alive()):
                    self._checkout(worker)
                    return worker
                self.lost(worker, "died while idle")
            if self.size < self.limit and time.monotonic() >= self.backoff_until:
                try:
                    worker = await self._spawn()
                except WorkerGoneError:
                    continue  # killed from outside while starting: not the app's fault
                self._checkout(worker)
                return worker
            handed, left = await self._queue(watch)
            if handed is not None or left:
                return handed

    def _checkout(self, worker: WorkerProcess) -> None:
        self.busy.add(worker)
        worker.deadline = None
        worker.idle_since = None
        last = worker.request_limit and worker.requests + 1 >= worker.request_limit
        if last or (worker.expires_at and time.monotonic() >= worker.expires_at):
            # Its replacement may start now, while this last request runs.
            self.retire_after(worker, "max_requests" if last else "max_lifetime")

    async def _queue(self, watch: Watch | None) -> tuple[WorkerProcess | None, bool]:
        """Wait for a worker: (worker or None to retry, whether the request left)."""
        if len(self.waiters) >= self.config.backlog:
            raise OverloadedError(f"{len(self.waiters)} requests already waiting")
        delay = self.config.queue_timeout
        owed = self.size < self.target
        if owed:  # capacity is owed but backing off: retry when the back-off ends
            delay = min(delay or MAX_BACKOFF, max(self.backoff_until - time.monotonic(), 0.01))
        waiter = await self.waiters.wait(delay, watch, self._give_back)
        if waiter.left:
            if waiter.worker is not None:
                self._give_back(waiter.worker)
            return None, True
        if waiter.error is not None:
            raise waiter.error
        if not waiter.woken and not owed:
            raise OverloadedError("no worker became free within queue_timeout")
        return waiter.worker, False

    def _give_back(self, worker: WorkerProcess) -> None:
        self.release(worker, served=False)

    def _offer(self, worker: WorkerProcess) -> None:
        """Give a free worker to the longest-waiting request, or park it as idle."""
        if self.closing:
            self._forget(worker)  # started or freed during shutdown: let it exit
            worker.close_pipes()
            self.exiting[worker] = time.monotonic() + KILL_GRACE
            return
        if self.waiters.hand(worker, self._checkout):
            return
        worker.idle_since = time.monotonic()
        self.idle.append(worker)

    def _wake_one(self) -> None:
        """Capacity was lost: let the first waiter retry (it may start a worker itself)."""
        self.waiters.wake_one()

    # -- after a request ------------------------------------------------------------

    def release(self, worker: WorkerProcess, served: bool = True) -> None:
        """The request finished cleanly: recycle the worker if it is due, else reuse it.

        ``served=False`` gives back a worker that never saw the request.
        """
        self.busy.discard(worker)
        worker.requests += served
        rss_limit = self.config.max_rss
        if worker.timed_out:  # the watchdog is killing it: never hand it out again
            self.discard(worker, "timeout")
        elif worker in self.retiring:
            self.retiring.discard(worker)
            self.retire(worker, worker.retire_reason or "recycled")
        elif rss_limit and (rss_of(worker.pid) or 0) > rss_limit:
            self.retire(worker, "max_rss")
        else:
            self._offer(worker)

    def retire_after(self, worker: WorkerProcess, reason: str) -> None:
        """Retire ``worker`` now if idle, else once its current request is done."""
        if worker in self.idle:
            self.idle.remove(worker)
            self.retire(worker, reason)
        elif worker in self.busy and worker not in self.retiring:
            worker.retire_reason = reason
            self.retiring.add(worker)
            self._wake_one()

    def retire(self, worker: WorkerProcess, reason: str) -> None:
        """Let a worker exit on its own (its pipe reaches EOF) and count the restart."""
        log.info("worker %d (pid %d) recycled: %s", worker.id, worker.pid, reason)
        self._count(reason)
        self._forget(worker)
        worker.close_pipes()
        self.exiting[worker] = time.monotonic() + RETIRE_GRACE
        self._wake_one()

    def discard(self, worker: WorkerProcess, reason: str) -> None:
        """Forget a broken worker (already signalled by the caller) and count the restart."""
        self._count(reason)
        self._forget(worker)
        if worker.alive():
            worker.signal_group(signal.SIGKILL)
        worker.close_pipes()
        self.exiting[worker] = time.monotonic()
        self._wake_one()

    def lost(self, worker: WorkerProcess, why: str) -> None:
        code = worker.popen.poll()
        log.error("worker %d (pid %d) %s (%s)", worker.id, worker.pid, why, describe_exit(code))
        self._count("died")
        self._forget(worker)
        worker.close_pipes()
        self.exiting[worker] = time.monotonic()

    def _count(self, reason: str) -> None:
        self.restarts[reason] = self.restarts.get(reason, 0) + 1

    def reap(self) -> None:
        """Collect exited workers and unused old templates; SIGKILL those past their grace."""
        now = time.monotonic()
        for template in list(self.old_templates):
            if not any(w.template is template for w in self._all):
                self.old_templates.remove(template)
                self._all.discard(template)
                template.close_pipes()  # it exits at EOF
                self.exiting[template] = now + KILL_GRACE
        for worker, kill_at in list(self.exiting.items()):
            code = worker.popen.poll()
            if code is not None:
                del self.exiting[worker]
                log.info(
                    "worker %d (pid %d) exited (%s)", worker.id, worker.pid, describe_exit(code)
                )
            elif now >= kill_at:
                worker.signal_group(signal.SIGKILL)

    async def supervise(self) -> None:
        """Run the supervisor (see :mod:`wsgipool._supervisor`) until the pool closes."""
        from ._supervisor import supervise

        await supervise(self)

    async def reload(self) -> None:
        """Replace every worker with a fresh one that re-imports the app, one at a time.

        Each new worker is ready before an old one is retired; if the new code fails to
        import, the old workers keep serving and the app's error is raised.
        """
        if self.config.preload:  # new code comes from a new template
            fresh = await self._start_template()
            if self.template is not None:
                self.old_templates.append(self.template)
            self.template = fresh
        for old in list(self.idle) + list(self.busy):
            if old not in self._all or old in self.retiring:
                continue
            new = await self._spawn()
            self._offer(new)
            self.retire_after(old, "reload")
        log.info("rolling restart done: %d workers", len(self.idle) + len(self.busy))

    # -- shutdown -------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop taking requests, let busy workers finish (graceful_timeout), stop all."""
        self.closing = True
        self.waiters.wake_all()
        with anyio.move_on_after(self.config.graceful_timeout):
            while self.busy or self.starting:
                await anyio.sleep(0.01)
        workers = list(self.idle) + list(self.busy) + list(self.exiting)
        async with anyio.create_task_group() as tg:
            for worker in workers:
                tg.start_soon(self._stop, worker)
        templates = [t for t in (self.template, *self.old_templates) if t is not None]
        self.template, self.old_templates = None, []
        async with anyio.create_task_group() as tg:
            for template in templates:
                tg.start_soon(self._stop, template)
        self.exiting.clear()

    async def _stop(self, worker: WorkerProcess) -> None:
        busy = worker in self.busy
        self._forget(worker)
        code = await worker.stop(grace=0.0 if busy else KILL_GRACE)
        log.info("worker %d (pid %d) stopped (%s)", worker.id, worker.pid, describe_exit(code))

    def kill_all(self) -> None:
        """Synchronous emergency stop (no event loop needed)."""
        self._finalizer()
