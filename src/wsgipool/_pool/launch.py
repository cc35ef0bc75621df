"""How a worker process comes to be, and how often that has failed lately.

:class:`Launcher` starts a worker's process (spawned, or forked from the preload
template, which it starts and replaces on reload), with the HELLO that tells it what
to import, and keeps the start-up back-off: after the app fails to import, the next
attempt waits 0.1 s, then twice as long each time, up to ``MAX_BACKOFF``. The pool
owns the worker from the moment its process exists.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time

import anyio

from .._config import Config
from .._errors import AppLoadError
from .._wire import frames as proto
from .._wire.appspec import AppSpec
from .process import WorkerProcess
from .spawner import resolve_identity
from .template import Template

log = logging.getLogger("wsgipool.pool")

MAX_BACKOFF = 30.0


class Launcher:
    """Starts worker processes for one app, and remembers its start-up failures."""

    def __init__(self, spec: AppSpec, config: Config, processes: set[WorkerProcess]) -> None:
        self.spec = spec
        self.config = config
        self.processes = processes  # every process started, for the owner's last-resort kill
        self.identity = resolve_identity(config.user, config.group)
        self.template: Template | None = None
        self.old_templates: list[Template] = []  # replaced on reload, still a parent
        self._template_starting = False
        self.failures = 0  # failed start-ups in a row
        self.backoff_until = 0.0
        self.last_error: str | None = None
        self._free_ids: list[int] = []
        self._next_id = 1

    def hello(self, worker_id: int) -> proto.Hello:
        hello: proto.Hello = {
            "app": self.spec,
            "sys_path": list(sys.path),
            "worker_id": worker_id,
            "log_level": self.config.log_level.upper(),
            "log_format": self.config.log_format,
        }
        if self.identity is not None:
            hello["uid"], hello["gid"] = self.identity
        if self.config.hooks:
            hello["hooks"] = os.path.abspath(self.config.hooks)
        return hello

    def env(self) -> dict[str, str] | None:
        allowed = self.config.worker_env
        if allowed is None:
            return None
        return {name: os.environ[name] for name in allowed if name in os.environ}

    async def create(self) -> WorkerProcess:
        """A new worker's process, with its id; it is not READY yet
        (see ``WorkerProcess.ready``)."""
        worker_id = self._take_id()
        try:
            if self.config.preload:
                worker = await (await self._template()).fork(worker_id)
            else:
                worker = await WorkerProcess.spawn(worker_id, self.hello(worker_id), self.env())
        except BaseException:
            self.free_id(worker_id)
            raise
        self.processes.add(worker)
        return worker

    def _take_id(self) -> int:
        """The lowest free worker id: a replacement takes the number of the one it replaces."""
        if self._free_ids:
            return self._free_ids.pop(self._free_ids.index(min(self._free_ids)))
        self._next_id += 1
        return self._next_id - 1

    def free_id(self, worker_id: int) -> None:
        if worker_id and worker_id not in self._free_ids:  # 0: a template
            self._free_ids.append(worker_id)

    def limits(self, started_at: float) -> tuple[int, float]:
        """When a worker started at ``started_at`` is retired: after this many requests,
        or once time.monotonic() passes this (each with its jitter; 0: never)."""
        config, requests, expires = self.config, 0, 0.0
        if config.max_requests:
            requests = config.max_requests + random.randint(0, config.max_requests_jitter)
        if config.max_lifetime:
            extra = random.uniform(0, config.max_lifetime_jitter)
            expires = started_at + config.max_lifetime + extra
        return requests, expires

    # -- the preload template -------------------------------------------------------

    async def _template(self) -> Template:
        """The preload template, started (and awaited) on first use or after it died."""
        while self._template_starting:
            await anyio.sleep(0.005)
        if self.template is not None and self.template.alive():
            return self.template
        if self.template is not None:  # it died: let go of its pipes and socket
            self.template.close_pipes()
            self.processes.discard(self.template)
            self.template = None
        self._template_starting = True
        try:
            self.template = await self.start_template()
        finally:
            self._template_starting = False
        return self.template

    async def start_template(self) -> Template:
        template = await Template.start(self.hello(0), self.env())
        self.processes.add(template)
        try:
            await template.ready(self.config.startup_timeout)
        except BaseException:
            self.processes.discard(template)
            template.kill_now()
            raise
        log.info("preload template started (pid %d)", template.pid)
        return template

    async def new_template(self) -> None:
        """Reload: new workers come from a new template (the new code); the old one stays
        until its last worker is gone."""
        fresh = await self.start_template()
        if self.template is not None:
            self.old_templates.append(self.template)
        self.template = fresh

    def templates(self) -> list[Template]:
        return [t for t in (self.template, *self.old_templates) if t is not None]

    # -- back-off -------------------------------------------------------------------

    def succeeded(self) -> None:
        self.failures = 0

    def failed(self, exc: AppLoadError, report: bool) -> None:
        """Back off; log the app's traceback once per distinct failure, a line otherwise."""
        self.failures += 1
        delay = min(0.1 * 2 ** (self.failures - 1), MAX_BACKOFF)
        self.backoff_until = time.monotonic() + delay
        exc.retry_after = delay
        repeated = str(exc) == self.last_error
        self.last_error = str(exc)
        if not report:
            return
        if exc.traceback and not repeated:
            log.error("the app failed to import:\n%s", exc.traceback.rstrip())
        log.error("worker failed to start (%s); next attempt in %.1fs", exc, delay)

    def backing_off(self) -> float:
        """Seconds until the next start-up may be tried (0 or less: now)."""
        return self.backoff_until - time.monotonic()

    def unavailable(self) -> AppLoadError | None:
        """While start-ups fail, the error to answer a request with (if no worker is up)."""
        left = self.backing_off()
        if self.failures and left > 0 and self.last_error is not None:
            return AppLoadError(self.last_error, retry_after=left)
        return None
