"""Online replay (``registry.rebuild``) on a real PostgreSQL, beside real concurrent writers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from artifactstore import views
from artifactstore.db.tables import VIEW_TABLES, metadata
from artifactstore.digests import hash_bytes
from artifactstore.errors import ReplayInProgressError, ViewsBusyError
from artifactstore.events import BlobStored, LocationVerified, TokenCreated
from artifactstore.manifest import ManifestFile, build_manifest
from artifactstore.registry.journal import transaction
from artifactstore.registry.rebuild import rebuild_views

if TYPE_CHECKING:
    from pathlib import Path

    import httpx
    from sqlalchemy.ext.asyncio import AsyncEngine

    from artifactstore.registry import Registry

HANG_GUARD_SECONDS = 120.0  # a deadlock guard, not a timing assertion
BATCH = 5

_WRITER = """
import asyncio, sys
from sqlalchemy.ext.asyncio import create_async_engine
from artifactstore.events import BlobStored
from artifactstore.manifest import ManifestFile, build_manifest
from artifactstore.registry import Registry
from artifactstore.registry.journal import transaction

async def main(url, tag, count):
    engine = create_async_engine(url)
    for i in range(count):
        async with transaction(engine, actor="proc") as tx:
            sha = (tag * 1000 + i).to_bytes(32, "big")
            await tx.record(BlobStored(sha, bytes(32), i, "local", f"proc-{tag}-{i}"))
    await engine.dispose()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def _blob(n: int, backend: str = "local") -> BlobStored:
    return BlobStored(n.to_bytes(32, "big"), bytes(32), n, backend, f"k{n}")


async def _seed(engine: AsyncEngine, count: int = 40) -> None:
    """``count`` blobs, each verified, and a token: more than a few batches of ``BATCH``."""
    async with transaction(engine, actor="seed") as tx:
        await tx.record(TokenCreated("ci", "write", b"\x07" * 32))
    for n in range(1, count + 1):
        async with transaction(engine, actor="seed") as tx:
            await tx.record(_blob(n), LocationVerified(n.to_bytes(32, "big"), "local"))


async def _fresh_replay(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    """The views a replay of the whole log into emptied views gives (rolled back)."""
    async with engine.connect() as conn, conn.begin() as tx:
        await views.replay(conn)
        result = await views.snapshot(conn)
        await tx.rollback()
    return result


async def _live(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    async with engine.connect() as conn:
        return await views.snapshot(conn)


async def _schema(engine: AsyncEngine) -> list[tuple[str, str]]:
    """Every relation and constraint name of the public schema, for before/after checks."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT relname, relkind::text FROM pg_class c JOIN pg_namespace n"
                " ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
                " UNION SELECT conname, contype::text FROM pg_constraint c JOIN pg_namespace n"
                " ON n.oid = c.connamespace WHERE n.nspname = 'public' ORDER BY 1, 2"
            )
        )
        return [(r[0], r[1]) for r in rows]


def _alembic_diff(conn: sa.Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


async def test_replay_rebuilds_emptied_views_and_keeps_the_schema(engine: AsyncEngine) -> None:
    """A replay refills emptied views row for row, leaving the migrated schema (Alembic agrees)."""
    await _seed(engine)
    before, schema = await _live(engine), await _schema(engine)
    async with engine.connect() as conn:
        assert await conn.run_sync(_alembic_diff) == []
    async with engine.begin() as conn:
        for table in VIEW_TABLES:
            await conn.execute(sa.delete(table))
    report = await rebuild_views(engine, batch=BATCH)
    assert report.events == 81
    assert await _live(engine) == before
    assert await _schema(engine) == schema
    async with engine.connect() as conn:
        assert await conn.run_sync(_alembic_diff) == []


async def _publish(registry: Registry, version: str) -> None:
    data = f"content {version}".encode()
    d = hash_bytes(data)
    await registry.ingest_bytes(data)
    entry = ManifestFile(path="f.txt", size=d.size, sha256=d.sha256, blake3=d.blake3)
    await registry.publish(build_manifest("demo", version, [entry], {}))


async def test_server_reads_and_writes_across_a_swap(
    api: httpx.AsyncClient, registry: Registry
) -> None:
    """A running app's pooled connections read and write the swapped-in views."""
    await _publish(registry, "1.0")
    before = await api.get("/v1/packages/demo")
    assert before.status_code == 200
    await rebuild_views(registry.engine)
    after = await api.get("/v1/packages/demo")
    assert after.json() == before.json()
    await _publish(registry, "2.0")
    versions = (await api.get("/v1/packages/demo")).json()["versions"]
    assert [v["version"] for v in versions] == ["1.0", "2.0"]
    assert (await api.get("/v1/packages/demo/versions/2.0")).status_code == 200


async def test_writers_append_while_replay_is_midway(
    engine: AsyncEngine, database_url: str
) -> None:
    """Writers in tasks and in another process commit mid-replay; views end as a fresh replay."""
    await _seed(engine)
    writers = [create_async_engine(database_url) for _ in range(2)]
    stop = asyncio.Event()
    paused: list[int] = []

    async def write_forever(writer: AsyncEngine, base: int) -> int:
        n = 0
        while not stop.is_set():
            n += 1
            async with transaction(writer, actor="task") as tx:
                await tx.record(
                    _blob(base + n), LocationVerified((base + n).to_bytes(32, "big"), "local")
                )
        return n

    async def midway(position: int) -> None:
        if paused:
            return
        paused.append(position)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WRITER, database_url, "7", "10"
        )
        # The replay is paused here holding its transaction: this only returns
        # if appends are not blocked by it.
        assert await asyncio.wait_for(proc.wait(), HANG_GUARD_SECONDS) == 0
        async with transaction(writers[0], actor="mid") as tx:
            await tx.record(_blob(999_999))

    tasks = [asyncio.create_task(write_forever(w, 10_000 * (i + 1))) for i, w in enumerate(writers)]
    try:
        await asyncio.sleep(0)
        report = await asyncio.wait_for(
            rebuild_views(engine, batch=BATCH, progress=midway), HANG_GUARD_SECONDS
        )
    finally:
        stop.set()
        written = await asyncio.gather(*tasks)
        for w in writers:
            await w.dispose()
    assert paused
    assert paused[0] < report.events
    assert sum(written) > 0
    live = await _live(engine)
    assert live == await _fresh_replay(engine)
    keys = {row[2] for row in live["storage_locations"]}
    assert {"k999999", "proc-7-0", "proc-7-9"} <= keys


async def test_replay_killed_midway_leaves_views_intact(engine: AsyncEngine) -> None:
    """A replay whose connection is killed mid-way changes no view and leaves no shadow table."""
    await _seed(engine)
    async with engine.begin() as conn:  # leftovers, as if from older interrupted runs
        await conn.execute(sa.text("CREATE TABLE blobs_replay (junk int)"))
        await conn.execute(sa.text("CREATE TABLE packages_retired (junk int)"))
    before = await _live(engine)

    async def kill(position: int) -> None:
        async with engine.connect() as conn:
            await conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_database d"
                    " ON d.oid = l.database WHERE l.locktype = 'advisory'"
                    " AND d.datname = current_database()"
                )
            )

    with pytest.raises(DBAPIError):
        await rebuild_views(engine, batch=BATCH, progress=kill)
    assert await _live(engine) == before
    async with engine.connect() as conn:
        leftovers = await conn.scalar(
            sa.text("SELECT count(*) FROM pg_class WHERE relname LIKE '%\\_replay%'")
        )
    assert leftovers == 1  # the older leftover, untouched by the killed run's rollback
    await rebuild_views(engine)
    async with engine.connect() as conn:
        leftovers = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM pg_class"
                " WHERE relname LIKE '%\\_replay%' OR relname LIKE '%\\_retired%'"
            )
        )
    assert leftovers == 0  # shadows swapped in, the retired tables dropped after the commit
    assert await _live(engine) == before


async def test_second_concurrent_replay_fails_cleanly(engine: AsyncEngine) -> None:
    """A replay started while another runs fails with ReplayInProgressError; the first completes."""
    await _seed(engine, 10)
    caught: list[ReplayInProgressError] = []

    async def second(position: int) -> None:
        if not caught:
            with pytest.raises(ReplayInProgressError) as info:
                await asyncio.wait_for(rebuild_views(engine), HANG_GUARD_SECONDS)
            caught.append(info.value)

    report = await rebuild_views(engine, batch=BATCH, progress=second)
    assert caught
    assert caught[0].code == "replay_in_progress"
    assert report.events == 21


async def test_swap_gives_up_on_a_reader_holding_a_view(engine: AsyncEngine) -> None:
    """A transaction reading a view makes the swap give up with views_busy, changing nothing."""
    await _seed(engine, 5)
    before = await _live(engine)
    async with engine.connect() as reader, reader.begin():
        await reader.execute(sa.text("SELECT count(*) FROM package_files"))
        async with engine.begin() as conn:
            for table in VIEW_TABLES:
                if table.name != "package_files":
                    await conn.execute(sa.delete(table))
        emptied = await _live(engine)
        with pytest.raises(ViewsBusyError):
            await asyncio.wait_for(rebuild_views(engine), HANG_GUARD_SECONDS)
        assert await _live(engine) == emptied
    await rebuild_views(engine)
    assert await _live(engine) == before


def _config(tmp_path: Path, database_url: str) -> Path:
    path = tmp_path / "artifactstore.toml"
    path.write_text(f'[database]\nurl = "{database_url}"\n')
    return path


async def _poll(
    engine: AsyncEngine, query: str, proc: asyncio.subprocess.Process | None = None
) -> None:
    """Wait until ``query`` returns true (a hang guard bounds it, not a timing check)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_GUARD_SECONDS
    while loop.time() < deadline:
        async with engine.connect() as conn:
            if await conn.scalar(sa.text(query)):
                return
        if proc is not None and proc.returncode is not None:
            pytest.fail(f"the replay ended (exit {proc.returncode}) before it was seen folding")
        await asyncio.sleep(0.02)
    pytest.fail(f"never true: {query}")


async def test_replay_process_killed_midway_leaves_views_intact(
    engine: AsyncEngine, tmp_path: Path, database_url: str
) -> None:
    """A replay process SIGKILLed while folding leaves even a tampered view as it was."""
    await _seed(engine, 300)
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE storage_locations SET key = 'tampered' WHERE sha256 = :s"),
            {"s": (7).to_bytes(32, "big")},
        )
    before = await _live(engine)
    command = [sys.executable, "-m", "artifactstore.cli", "events", "replay", "--batch", "1"]
    command += ["--config", str(_config(tmp_path, database_url))]
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        await _poll(
            engine,
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
            " AND query LIKE '%\\_replay\" AS t%'",
            proc,
        )
    finally:
        proc.kill()
        await proc.wait()
    await _poll(engine, "SELECT count(*) = 0 FROM pg_locks WHERE locktype = 'advisory'")
    assert await _live(engine) == before
    async with engine.connect() as conn:
        shadows = await conn.scalar(
            sa.text("SELECT count(*) FROM pg_class WHERE relname LIKE '%\\_replay'")
        )
    assert shadows == 0
    report = await rebuild_views(engine)
    assert report.events == 601
    assert await _live(engine) != before


async def test_check_detects_a_tampered_view_row(
    engine: AsyncEngine, tmp_path: Path, database_url: str
) -> None:
    """``replay --check`` exits 0 on intact views, 1 naming a tampered one, and changes nothing."""
    await _seed(engine, 5)
    command = [sys.executable, "-m", "artifactstore.cli", "events", "replay", "--check"]
    command += ["--config", str(_config(tmp_path, database_url))]
    clean = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE storage_locations SET key = 'x'"
                " WHERE sha256 = (SELECT sha256 FROM storage_locations LIMIT 1)"
            )
        )
    tampered = await _live(engine)
    found = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True)
    assert found.returncode == 1
    assert "storage_locations" in found.stderr + found.stdout
    assert "blobs," not in found.stderr + found.stdout
    assert await _live(engine) == tampered
