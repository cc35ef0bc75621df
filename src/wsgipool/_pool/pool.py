"""Supervision of the worker processes: spawn, dispatch, queue, recycle, replace, stop.

Every worker is in one :class:`State`, and the pool's registry
(:meth:`~wsgipool._pool.registry.Registry.set_state`) is the one place that changes it.
A request gets a worker as a :class:`~wsgipool._pool.lease.Lease` from
:meth:`Pool.acquire` and gives it back through it.

The pool works with or without a host task. Under ASGI lifespan it starts ``workers``
processes up front and :func:`wsgipool._pool.supervisor.supervise` calls :meth:`Pool.tick`
every 100 ms, which reaps exited processes, replaces dead workers and retires old or
surplus ones. Without lifespan the pool grows lazily: a request that finds no idle
worker and spare capacity starts one itself, and exited workers are reaped on the next
dispatch. Request deadlines need neither: the lease's reads enforce them.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
import weakref

import anyio

from .._config import Config
from .._errors import (
    AppLoadError,
    OverloadedError,
    PoolClosedError,
    ProtocolError,
    WorkerError,
    WorkerStartError,
)
from .._logging import request_id
from .._wire.appspec import AppSpec
from .busy import BusyTime
from .deaths import describe_exit
from .hooks import FrontHooks
from .launch import MAX_BACKOFF, Launcher
from .lease import Lease
from .process import KILL_GRACE, WorkerProcess
from .queue import Payload, WaitQueue, Watch
from .registry import Registry
from .slot import LIVE, Slot, State
from .stats import PoolStats, WorkerInfo, rss_of

log = logging.getLogger("wsgipool.pool")

#: Seconds a retired worker gets to exit on its own before it is killed.
RETIRE_GRACE = 10.0
#: The reasons a worker leaves that wsgipool did not choose (it crashed mid-request, or
#: died while idle): counted in the metrics by the cause of its death.
UNPLANNED = ("crashed", "died")
#: Start-up attempts a request makes when workers are killed from outside meanwhile.
START_TRIES = 3


def _kill_all(processes: set[WorkerProcess]) -> None:
    for process in list(processes):
        process.kill_now()
    processes.clear()


def _info(worker: WorkerProcess, slot: Slot) -> WorkerInfo:
    info = WorkerInfo(worker.id, worker.pid, slot.state.value, slot.requests, worker.started_at)
    lease = slot.lease
    if lease is None:
        return info
    return dataclasses.replace(
        info, request=lease.request, client=lease.client, busy_since=lease.started
    )


class Pool:
    """Worker processes serving one app, one request each at a time."""

    def __init__(self, spec: AppSpec, config: Config) -> None:
        self.spec = spec
        self.config = config
        self.target = config.workers
        self.limit = config.max_workers or config.workers
        self.starting = 0  # start-ups under way (before READY)
        self.closing = False
        self.waiters = WaitQueue()
        self._processes: set[WorkerProcess] = set()  # workers and templates: the finalizer's
        self._finalizer = weakref.finalize(self, _kill_all, self._processes)
        self.launcher = Launcher(spec, config, self._processes)
        self.registry = Registry(self.waiters, self._free_id, self._processes)
        # The registry's own containers, under the names the pool reads them by.
        self.workers = self.registry.workers  # every worker not yet reaped
        self.restarts = self.registry.restarts
        self.events: dict[tuple[str, str], int] = {}  # stack dumps, interrupts: by kind
        self._idle = self.registry.idle
        self._set_state = self.registry.set_state
        self.hooks = FrontHooks(self, spec, config)
        self.busy_time = BusyTime(self.limit)  # from the leases' starts and ends

    # -- state ----------------------------------------------------------------------

    def _free_id(self, worker_id: int) -> None:
        self.launcher.free_id(worker_id)

    @property
    def size(self) -> int:
        """Workers that count against ``workers``: alive, not retiring, or on their way up."""
        return len(self._idle) + self.registry.busy + self.starting

    @property
    def up(self) -> int:
        """Workers that can serve or are serving."""
        return self.registry.up

    @property
    def waiting(self) -> int:
        return len(self.waiters)

    def stats(self) -> PoolStats:
        by_id = sorted(self.workers.items(), key=lambda item: item[0].id)
        live = [(worker, slot) for worker, slot in by_id if slot.state in LIVE]
        launcher, template = self.launcher, self.launcher.template
        return PoolStats(
            workers=tuple(_info(worker, slot) for worker, slot in live),
            target=self.target,
            starting=self.starting,
            waiting=self.waiting,
            closing=self.closing,
            failures=launcher.failures,
            backoff_until=launcher.backoff_until,
            last_error=launcher.last_error,
            restarts=dict(self.restarts),
            template_pid=template.pid if template is not None and template.alive() else None,
            events=dict(self.events),
        )

    # -- start-up -------------------------------------------------------------------

    async def _spawn(self, report: bool = True, replacing: int = 0) -> WorkerProcess:
        """Start one worker and wait until it is ready (counted in ``starting`` meanwhile).

        Raises AppLoadError (the app's fault: backs off) or WorkerStartError (not: none);
        ``report=False`` leaves logging a failure to the caller.
        """
        self.starting += 1
        worker = None
        try:
            try:
                worker = await self.launcher.create()
                slot = self.workers[worker] = Slot(since=worker.started_at)
                slot.request_limit, slot.expires_at = self.launcher.limits(worker.started_at)
                await worker.ready(self.config.startup_timeout)
            except (OSError, ProtocolError) as exc:
                raise WorkerStartError(f"a worker did not start: {exc}") from exc
        except BaseException as exc:
            self.starting -= 1
            if worker is not None:  # one that sent its failure exits by itself
                sent = isinstance(exc, AppLoadError) and bool(exc.traceback)
                self._set_state(worker, State.EXITING, grace=KILL_GRACE if sent else 0)
            if isinstance(exc, AppLoadError):
                self.launcher.failed(exc, report)
                self._fail_waiters(exc)
            elif isinstance(exc, WorkerError) and report:
                log.warning("%s", exc)
            raise
        self.starting -= 1
        self.launcher.succeeded()
        if replacing:
            log.info("worker %d started (pid %d), replacing worker %d", worker.id, worker.pid,
                     replacing)  # fmt: skip
        else:
            log.info("worker %d started (pid %d)", worker.id, worker.pid)
        return worker

    def _fail_waiters(self, exc: AppLoadError) -> None:
        """With no worker left to wait for, queued requests get the start-up error now."""
        if not (self.up or self.starting):
            self.waiters.wake_all(exc)

    def unavailable(self) -> AppLoadError | None:
        """While start-ups fail and no worker is up, the error to answer requests with at
        once (503 with Retry-After), rather than queueing them until the back-off ends."""
        if self.launcher.failures and not self.starting and not self.up:
            return self.launcher.unavailable()
        return None

    async def start(self) -> None:
        """Start ``workers`` processes; if one cannot load the app, the start fails (the
        error says why, with the app's traceback; nothing is retried)."""
        self.closing = False
        self.hooks.run("on_starting")
        errors: list[Exception] = []
        async with anyio.create_task_group() as tg:
            for _ in range(self.target - self.size):
                tg.start_soon(self.spawn_idle, errors)
        if errors:
            first = errors[0]
            if isinstance(first, AppLoadError) and first.traceback:
                log.error("the app failed to import:\n%s", first.traceback.rstrip())
            raise first
        self.hooks.workers = self.up
        self.hooks.run("when_ready")

    async def spawn_idle(self, errors: list[Exception] | None = None) -> None:
        """Start a worker for the pool (not for a request); the supervisor's replacement."""
        if errors is None and self.size >= self.target:
            return  # a request started one meanwhile
        try:
            self._offer(await self._spawn(report=errors is None))
        except (AppLoadError, WorkerStartError) as exc:
            if errors is not None:
                errors.append(exc)  # else: logged and backed off in _spawn

    # -- dispatch -------------------------------------------------------------------

    async def acquire(self, watch: Watch | None = None, payload: Payload = ()) -> Lease | None:
        """A lease on a worker for one request: idle now, started for us, or after queueing.

        While queued the caller's ``watch`` runs; if it returns (the client left), the
        request leaves the queue and the result is None. A queued request's ``payload``
        (its first frames) may go to the worker as it is handed over: ``Lease.request_sent`` says
        so, and then the lease comes back even if the client left meanwhile.
        """
        tries, since = 0, 0.0  # since: when the request first queued
        while True:
            if self.closing:
                raise PoolClosedError("the server is shutting down")
            self.reap()
            down = self.unavailable()
            if down is not None:
                raise down
            while self._idle:
                worker = self._idle[-1]
                if not worker.reader.broken:
                    self._checkout(worker)
                    return self._lease(worker)
                self.lost(worker, "died while idle")
            if self.size < self.limit and self.launcher.backing_off() <= 0:
                try:
                    worker = await self._spawn()
                except WorkerStartError:
                    tries += 1
                    if tries < START_TRIES:
                        continue  # killed from outside while starting: not the app's fault
                    raise
                self._checkout(worker)
                return self._lease(worker)
            since = since or time.monotonic()
            handed, left, sent = await self._queue(watch, since, payload)
            if handed is not None:
                lease = self._lease(handed)
                lease.request_sent = sent
                return lease
            if left:
                return None

    def _lease(self, worker: WorkerProcess) -> Lease:
        config = self.config
        self.busy_time.start()  # until the lease calls release or discard
        lease = Lease(self, worker, config.timeout, config.timeout_grace, config.slow_request)
        self.workers[worker].lease = lease  # for the status page and the stacks on demand
        return lease

    def count(self, event: str, label: str) -> None:
        """Count an event of a lease (a stack dump, an interrupt) for the metrics."""
        key = (event, label)
        self.events[key] = self.events.get(key, 0) + 1

    async def log_stacks(self) -> int:
        """Log the stacks of every worker serving a request now, one entry each; how many."""
        leases = [slot.lease for slot in list(self.workers.values()) if slot.lease is not None]
        for lease in sorted(leases, key=lambda lease: lease.worker.id):
            if not lease.ended:
                log.warning("%s", await lease.stacks())
        if not leases:
            log.info("stacks asked for, but no worker is serving a request")
        return len(leases)

    def _checkout(self, worker: WorkerProcess) -> None:
        self._set_state(worker, State.BUSY)
        slot = self.workers[worker]
        last = slot.request_limit and slot.requests + 1 >= slot.request_limit
        if last or (slot.expires_at and time.monotonic() >= slot.expires_at):
            # Its replacement may start now, while this last request runs.
            self._set_state(worker, State.RETIRING, "max_requests" if last else "max_lifetime")

    async def _queue(
        self, watch: Watch | None, since: float, payload: Payload
    ) -> tuple[WorkerProcess | None, bool, bool]:
        """Wait for a worker: (worker or None to retry, whether the request left, whether
        its payload went to the worker)."""
        if len(self.waiters) >= self.config.backlog:
            raise OverloadedError(f"{len(self.waiters)} requests already waiting")
        delay = self.config.queue_timeout
        owed = self.size < self.target
        if owed:  # capacity is owed but backing off: retry when the back-off ends
            delay = min(delay or MAX_BACKOFF, max(self.launcher.backing_off(), 0.01))
        waiter = await self.waiters.wait(delay, watch, self._unused, since, payload)
        if waiter.left and not waiter.sent:
            if waiter.worker is not None:
                self._unused(waiter.worker, False)
            return None, True, False
        if waiter.error is not None:
            raise waiter.error
        if not waiter.woken and not owed:
            raise OverloadedError("no worker became free within queue_timeout")
        return waiter.worker, False, waiter.sent

    def _unused(self, worker: WorkerProcess, sent: bool) -> None:
        """A worker handed to a request that was cancelled before its lease began; one that
        has the request's frames already would answer it into the next request's lease: it
        is replaced."""
        if sent:
            self._set_state(worker, State.EXITING, "request cancelled")
        else:
            self._free(worker, served=False)

    def _offer(self, worker: WorkerProcess) -> None:
        """Give a free worker to the longest-waiting request, or park it as idle."""
        if self.closing:  # started or freed during shutdown: let it exit
            self._set_state(worker, State.EXITING, grace=KILL_GRACE)
        elif not self.waiters.hand(worker, self._checkout):
            self._set_state(worker, State.IDLE)

    # -- endings (a lease calls release or discard) -----------------------------------

    def release(self, worker: WorkerProcess, served: bool = True) -> None:
        """A lease ended: the worker is free again.

        ``served=False`` gives back a worker that never saw the request.
        """
        self.busy_time.stop()
        self._free(worker, served)

    def _free(self, worker: WorkerProcess, served: bool) -> None:
        """Recycle the worker if it is due, else reuse it."""
        slot = self.workers.get(worker)
        if slot is None or slot.state not in (State.BUSY, State.RETIRING):
            return  # stopped meanwhile (shutdown)
        slot.requests += served
        rss_limit = self.config.max_rss
        if slot.state is State.RETIRING:
            self.retire(worker, slot.reason or "recycled")
        elif rss_limit and (rss_of(worker.pid) or 0) > rss_limit:
            self.retire(worker, "max_rss")
        else:
            self._offer(worker)

    def retire_after(self, worker: WorkerProcess, reason: str) -> None:
        """Retire ``worker`` now if idle, else once its current request is done."""
        slot = self.workers.get(worker)
        state = None if slot is None else slot.state  # None: gone meanwhile
        if state is State.IDLE:
            self.retire(worker, reason)
        elif state is State.BUSY:
            self._set_state(worker, State.RETIRING, reason)

    def retire(self, worker: WorkerProcess, reason: str) -> None:
        """Let a worker exit on its own (its pipe reaches EOF) and count the restart."""
        log.info("worker %d (pid %d) recycled: %s", worker.id, worker.pid, reason)
        self._set_state(worker, State.EXITING, reason, grace=RETIRE_GRACE)

    def discard(self, worker: WorkerProcess, reason: str) -> None:
        """A lease ended badly: kill its worker (the caller has logged why) and count the
        restart."""
        self.busy_time.stop()
        self._set_state(worker, State.EXITING, reason)

    def lost(self, worker: WorkerProcess, why: str) -> None:
        log.error("worker %d (pid %d) %s (%s)", worker.id, worker.pid, why, worker.exit_status())
        self._set_state(worker, State.EXITING, "died")

    # -- supervision ----------------------------------------------------------------

    def reap(self) -> None:
        """Collect exited workers and unused old templates; SIGKILL those past their grace."""
        old = self.launcher.old_templates
        if not (self.registry.exiting or old):
            return  # the usual case, on every dispatch
        token = request_id.set(None)  # called by a request, but what exits is not its own
        try:
            self._reap()
        finally:
            request_id.reset(token)

    def _reap(self) -> None:
        old, now = self.launcher.old_templates, time.monotonic()
        for template in list(old):
            if not any(w.template is template for w in self.workers):
                old.remove(template)
                self._set_state(template, State.EXITING, grace=KILL_GRACE)  # exits at EOF
        for worker in list(self._processes):
            slot = self.workers.get(worker)
            if slot is None or slot.state is not State.EXITING:
                continue
            death = worker.death()
            if death is not None:
                self._set_state(worker, State.GONE)
                if slot.reason in UNPLANNED:
                    self.count("deaths", death.cause)
                log.info("worker %d (pid %d) exited (%s)", worker.id, worker.pid, death)
                self.hooks.child_exit(worker.id, worker.pid, death)
            elif now >= slot.kill_at:
                worker.signal_group(signal.SIGKILL)

    def tick(self) -> int:
        """The supervisor's look at the pool: reap, notice deaths, retire old and surplus
        idle workers; returns how many workers to start now."""
        self.reap()
        now = time.monotonic()
        for worker in list(self._idle):
            if not worker.alive():
                self.lost(worker, "died while idle")
            elif 0 < self.workers[worker].expires_at <= now:
                self.retire(worker, "max_lifetime")
        extra = self.up - self.registry.count(State.RETIRING) - self.target
        for worker in sorted(self._idle, key=lambda w: self.workers[w].since):
            if extra <= 0:
                break
            if now - self.workers[worker].since >= self.config.idle_timeout:
                self.retire(worker, "idle")
                extra -= 1
        if not self.closing:
            self.hooks.count(self.up)
        if self.launcher.backing_off() > 0 or self.closing:
            return 0
        return max(self.target - self.size, 0)

    async def reload(self) -> None:
        """Replace every worker with a fresh one that re-imports the app, one at a time.

        Each new worker is ready before an old one is retired; if the new code fails to
        import, the old workers keep serving and the app's error is raised.
        """
        self.hooks.run("on_reload")
        if self.config.preload:  # new code comes from a new template
            await self.launcher.new_template()
        for old in sorted(self.workers, key=lambda w: w.id):
            slot = self.workers.get(old)  # it may have gone meanwhile
            if slot is None or slot.state not in (State.IDLE, State.BUSY):
                continue
            new = await self._spawn(replacing=old.id)
            self._offer(new)
            self.retire_after(old, "reload")
        log.info("rolling restart done: %d workers, all new",
                 self.up - self.registry.count(State.RETIRING))  # fmt: skip

    # -- shutdown -------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop taking requests, let busy workers finish (graceful_timeout), stop all."""
        self.closing = True
        self.waiters.wake_all()
        with anyio.move_on_after(self.config.graceful_timeout):
            while self.registry.count(State.BUSY, State.RETIRING) or self.starting:
                await anyio.sleep(0.01)
        async with anyio.create_task_group() as tg:
            for worker in list(self.workers):
                tg.start_soon(self._stop, worker)
        templates = self.launcher.templates()
        self.launcher.template, self.launcher.old_templates = None, []
        async with anyio.create_task_group() as tg:
            for template in templates:
                tg.start_soon(self._stop, template)
        self.hooks.run("on_exit")

    async def _stop(self, worker: WorkerProcess) -> None:
        busy = self.registry.slot(worker).state in (State.BUSY, State.RETIRING)
        self._set_state(worker, State.EXITING, grace=KILL_GRACE)
        code = await worker.stop(grace=0.0 if busy else KILL_GRACE)
        self._set_state(worker, State.GONE)
        log.info("worker %d (pid %d) stopped (%s)", worker.id, worker.pid, describe_exit(code))
        death = worker.death()
        if death is not None:
            self.hooks.child_exit(worker.id, worker.pid, death)

    def kill_all(self) -> None:
        """Synchronous emergency stop (no event loop needed)."""
        self._finalizer()
