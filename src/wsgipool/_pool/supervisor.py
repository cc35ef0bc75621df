"""The pool's background task while the server runs (ASGI lifespan hosts it).

Every ``TICK`` it asks the pool to look at its workers (:meth:`Pool.tick`: reap exited
processes, notice deaths, retire old and surplus idle workers) and starts the
replacements the pool asks for. Replacements start in a task group of their own, so a
slow import never holds up the next tick. Request deadlines are not its business: each
request's lease enforces its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from .pool import Pool

#: How often the supervisor looks at its workers.
TICK = 0.1


async def supervise(pool: Pool) -> None:
    """Run until the pool closes."""
    async with anyio.create_task_group() as spawns:
        while not pool.closing:
            missing = pool.tick()
            for _ in range(missing):
                spawns.start_soon(pool.spawn_idle)
            if missing:
                await anyio.sleep(0)  # let them count themselves in pool.starting
            await anyio.sleep(TICK)
        spawns.cancel_scope.cancel()
