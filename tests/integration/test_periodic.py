"""Periodic jobs across replicas: two runners (two engines, as two replicas) on one database."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from artifactstore.registry.periodic import Job, Outcome, Periodic

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sqlalchemy.ext.asyncio import AsyncEngine

DEADLINE_SECONDS = 60.0


@pytest.fixture
async def replicas(database_url: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """Two engines on the test's database: what two replicas hold."""
    first, second = create_async_engine(database_url), create_async_engine(database_url)
    try:
        yield first, second
    finally:
        await first.dispose()
        await second.dispose()


class Blocking:
    """A job body that signals when it starts and waits until released."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.runs = 0

    async def __call__(self) -> None:
        self.runs += 1
        self.started.set()
        await self.release.wait()


def _pair(
    replicas: tuple[AsyncEngine, AsyncEngine],
) -> tuple[Periodic, Periodic, Blocking, Blocking]:
    """Runners of replicas A and B; A's body blocks until released, B's runs straight through."""
    on_a, on_b = Blocking(), Blocking()
    on_b.release.set()
    return Periodic(replicas[0]), Periodic(replicas[1]), on_a, on_b


async def _holding(runner: Periodic, job: Job, body: Blocking) -> asyncio.Task[Outcome]:
    task = asyncio.create_task(runner.tick(job))
    await asyncio.wait_for(body.started.wait(), DEADLINE_SECONDS)
    return task


async def test_a_locked_job_runs_on_one_replica_at_a_time(
    replicas: tuple[AsyncEngine, AsyncEngine],
) -> None:
    """While replica A runs a job's body, B's tick of the same job skips; after A, B runs it."""
    a, b, on_a, on_b = _pair(replicas)
    first = await _holding(a, Job("expiry", 60, on_a), on_a)
    assert await b.tick(Job("expiry", 60, on_b)) == "skipped"
    assert on_b.runs == 0
    assert await b.tick(Job("other", 60, on_b)) == "ran"  # another job's lock is another lock
    on_a.release.set()
    assert await asyncio.wait_for(first, DEADLINE_SECONDS) == "ran"
    assert await b.tick(Job("expiry", 60, on_b)) == "ran"
    assert on_b.runs == 2


async def test_a_shared_job_runs_on_every_replica_at_once(
    replicas: tuple[AsyncEngine, AsyncEngine],
) -> None:
    """A shared job takes no lock: B runs it while A's body is still running."""
    a, b, on_a, on_b = _pair(replicas)
    first = await _holding(a, Job("sweep", 60, on_a, shared=True), on_a)
    assert await b.tick(Job("sweep", 60, on_b, shared=True)) == "ran"
    on_a.release.set()
    assert await asyncio.wait_for(first, DEADLINE_SECONDS) == "ran"


async def test_a_dead_holders_lock_passes_to_the_next_tick(
    replicas: tuple[AsyncEngine, AsyncEngine], engine: AsyncEngine
) -> None:
    """When the holder's connection dies mid-body, the other replica's next tick runs the job."""
    a, b, on_a, on_b = _pair(replicas)
    first = await _holding(a, Job("expiry", 60, on_a), on_a)
    assert await b.tick(Job("expiry", 60, on_b)) == "skipped"
    async with engine.connect() as admin:
        killed = await admin.scalar(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_locks"
                " WHERE locktype = 'advisory' AND granted AND database ="
                " (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        )
    assert killed == 1
    assert await b.tick(Job("expiry", 60, on_b)) == "ran"
    on_a.release.set()
    assert await asyncio.wait_for(first, DEADLINE_SECONDS) == "failed"  # its unlock found no link


async def test_the_loop_ticks_until_stopped_and_survives_a_failing_body(
    replicas: tuple[AsyncEngine, AsyncEngine],
) -> None:
    """Each tick is observed; a body that raises is 'failed' and the next tick runs again."""
    seen: list[tuple[str, Outcome]] = []
    enough = asyncio.Event()
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            msg = "first tick fails"
            raise RuntimeError(msg)

    def observe(name: str, outcome: Outcome) -> None:
        seen.append((name, outcome))
        if len(seen) >= 3:  # a failure and two runs after it
            enough.set()

    runner = Periodic(replicas[0], observe=observe)
    runner.start([Job("flaky", 0.01, flaky)])
    await asyncio.wait_for(enough.wait(), DEADLINE_SECONDS)
    await runner.stop()
    assert seen[:3] == [("flaky", "failed"), ("flaky", "ran"), ("flaky", "ran")]
