"""The pool's background task while the server runs (ASGI lifespan hosts it).

Every ``TICK`` it collects exited processes, replaces workers that died (backing off
when the app keeps failing to start), retires idle workers past ``max_lifetime`` or
above ``workers`` for longer than ``idle_timeout``, and enforces request deadlines:
a late worker gets SIGTERM, then SIGKILL, and its request sees the pipe close. Doing
this here, rather than a timer per request, keeps deadlines off the request path.
"""

from __future__ import annotations

import signal
import time

import anyio

from ._pool import KILL_GRACE, Pool

#: How often the supervisor looks at its workers.
TICK = 0.1


async def supervise(pool: Pool) -> None:
    """Run until the pool closes; requests rely on it for their deadlines meanwhile."""
    pool.supervised = True
    try:
        # Replacements start in this group and the loop goes on meanwhile: a slow import
        # must not hold up deadlines and reaping.
        async with anyio.create_task_group() as spawns:
            while not pool.closing:
                pool.reap()
                check_idle(pool)
                check_deadlines(pool)
                missing = pool.target - pool.size
                if missing > 0 and time.monotonic() >= pool.backoff_until:
                    for _ in range(missing):
                        spawns.start_soon(pool.spawn_idle)
                    await anyio.sleep(0)  # let them count themselves in pool.starting
                await anyio.sleep(TICK)
            spawns.cancel_scope.cancel()
    finally:
        pool.supervised = False


def check_deadlines(pool: Pool) -> None:
    now = time.monotonic()
    for worker in list(pool.busy):
        if worker.deadline is None or now < worker.deadline:
            continue
        if not worker.timed_out:
            worker.timed_out = True
            worker.kill_at = now + KILL_GRACE
            worker.signal_group(signal.SIGTERM)
        elif now >= worker.kill_at:
            worker.signal_group(signal.SIGKILL)


def check_idle(pool: Pool) -> None:
    now = time.monotonic()
    for worker in list(pool.idle):
        if not worker.alive():
            pool.lost(worker, "died while idle")
        elif worker.expires_at and now >= worker.expires_at:
            pool.retire_after(worker, "max_lifetime")
    extra = len(pool.idle) + len(pool.busy) - len(pool.retiring) - pool.target
    for worker in sorted(pool.idle, key=lambda w: w.idle_since or now):
        if extra <= 0:
            break
        if now - (worker.idle_since or now) >= pool.config.idle_timeout:
            pool.retire_after(worker, "idle")
            extra -= 1
