"""Periodic jobs, one replica at a time: a named body every N seconds under an advisory lock.

Several ``serve`` replicas share one database (DESIGN section 13). Work that
must not run twice at once - upload expiry today, garbage collection and
continuous verification later - runs as a ``Job`` here: on each tick the
replica tries ``db.advisory.try_hold(job_key(name))`` and runs the body only
while it holds it; a replica that does not get the lock skips that tick
(logged at debug). The lock dies with its connection, so a replica killed
mid-job never strands it: another replica takes the job on its next tick.
No lease, no clock shared between hosts.

Each replica ticks on its own clock, so with R replicas a locked job runs up
to R times per interval, never two at once: bodies must be idempotent (they
are: each pass settles what is due). A ``shared`` job runs on every replica
without the lock, for state only that replica can reach (its own staging
dir). This module does not decide which jobs exist: the app's wiring lists
them in one place (``api.app``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from artifactstore.db.advisory import job_key, try_hold
from artifactstore.db.outage import database_outage
from artifactstore.testpoint import pause_at

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["Job", "Outcome", "Periodic"]

log = logging.getLogger("artifactstore.periodic")

#: What one tick of a job did: ran the body, skipped it (another replica held
#: the lock), or failed (the body or the lock raised; the next tick retries).
Outcome = Literal["ran", "skipped", "failed"]


@dataclass(frozen=True, slots=True)
class Job:
    """A body to run every ``every`` seconds; ``shared``: on every replica, without the lock."""

    name: str
    every: float
    run: Callable[[], Awaitable[object]]
    shared: bool = False


class Periodic:
    """Runs jobs on this replica's event loop until ``stop``; ``observe`` hears each tick."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        observe: Callable[[str, Outcome], None] | None = None,
    ) -> None:
        self.engine = engine
        self.observe = observe
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, jobs: Iterable[Job]) -> None:
        """One task per job; each ticks at once, then every ``job.every`` seconds."""
        for job in jobs:
            self._tasks.append(asyncio.create_task(self._loop(job), name=f"job:{job.name}"))

    async def stop(self) -> None:
        """Cancel every job (a body in flight is interrupted; its lock dies with it)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def tick(self, job: Job) -> Outcome:
        """One turn of ``job``: run it if this replica may, and say what happened."""
        try:
            if job.shared:
                await job.run()
                outcome: Outcome = "ran"
            else:
                async with try_hold(self.engine, job_key(job.name)) as held:
                    if held:
                        await pause_at(f"job-held:{job.name}")
                        await job.run()
                        outcome = "ran"
                    else:
                        log.debug("job %s: another replica holds it; skipped this tick", job.name)
                        outcome = "skipped"
        except Exception as exc:
            outage = database_outage(exc)
            if outage is not None:
                log.warning("job %s: %s; next tick retries", job.name, outage.message)
            else:
                log.exception("job %s failed; next tick retries", job.name)
            outcome = "failed"
        if self.observe is not None:
            self.observe(job.name, outcome)
        return outcome

    async def _loop(self, job: Job) -> None:
        while True:
            await self.tick(job)
            await asyncio.sleep(job.every)
