"""The event log against a real PostgreSQL: chain, append-only trigger, concurrency."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from artifactstore.db.tables import events
from artifactstore.errors import ChainBrokenError
from artifactstore.events import (
    GENESIS_HASH,
    BlobStored,
    EventPayload,
    EventType,
    PackageYanked,
    TokenRevoked,
    chain_hash,
    read_events,
    verify_chain,
)
from artifactstore.registry.journal import transaction

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


def _blob(i: int) -> BlobStored:
    return BlobStored(
        sha256=i.to_bytes(32, "big"), blake3=bytes(32), size=i, backend="local", key=f"k{i}"
    )


async def test_append_links_each_event_to_the_previous(engine: AsyncEngine) -> None:
    """Appended events get seq 1..n and hash = blake3(prev_hash || type || payload)."""
    async with transaction(engine, actor="test") as tx:
        appended = await tx.record(_blob(1), _blob(2), _blob(3))
    assert [e.seq for e in appended] == [1, 2, 3]
    assert appended[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(appended):
        assert after.prev_hash == before.hash
    for e in appended:
        assert e.hash == chain_hash(e.prev_hash, e.type, e.payload)
        assert e.type == EventType.BLOB_STORED
    async with engine.connect() as conn:
        report = await verify_chain(conn)
        stored = await read_events(conn)
    assert report.count == 3
    assert report.head_hash == appended[-1].hash
    assert [e.data() for e in stored] == [_blob(1), _blob(2), _blob(3)]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET actor = 'mallory'",
        "DELETE FROM events",
        "TRUNCATE events",
    ],
)
async def test_database_refuses_to_rewrite_history(engine: AsyncEngine, statement: str) -> None:
    """UPDATE, DELETE and TRUNCATE on events fail in the database itself."""
    async with transaction(engine, actor="test") as tx:
        await tx.record(_blob(1))
    with pytest.raises(DBAPIError, match="append-only"):
        async with engine.begin() as conn:
            await conn.execute(sa.text(statement))
    async with engine.connect() as conn:
        assert (await verify_chain(conn)).count == 1


async def test_superuser_edit_is_caught_at_the_exact_seq(engine: AsyncEngine) -> None:
    """An edit made with the trigger disabled is named by seq by chain verification."""
    async with transaction(engine, actor="test") as tx:
        await tx.record(*(_blob(i) for i in range(1, 6)))
    async with engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE events DISABLE TRIGGER events_append_only"))
        await conn.execute(
            sa.text("UPDATE events SET payload = :p WHERE seq = 4"), {"p": _blob(99).to_cbor()}
        )
        await conn.execute(sa.text("ALTER TABLE events ENABLE TRIGGER events_append_only"))
    async with engine.connect() as conn:
        with pytest.raises(ChainBrokenError) as caught:
            await verify_chain(conn)
    assert caught.value.detail["seq"] == 4


async def test_deleted_row_is_reported_as_a_gap(engine: AsyncEngine) -> None:
    """A row removed behind the trigger's back shows as a gap at its seq."""
    async with transaction(engine, actor="test") as tx:
        await tx.record(*(_blob(i) for i in range(1, 4)))
    async with engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE events DISABLE TRIGGER events_append_only"))
        await conn.execute(sa.text("DELETE FROM events WHERE seq = 2"))
        await conn.execute(sa.text("ALTER TABLE events ENABLE TRIGGER events_append_only"))
    async with engine.connect() as conn:
        with pytest.raises(ChainBrokenError) as caught:
            await verify_chain(conn)
    assert caught.value.detail["seq"] == 2


async def test_parallel_appenders_keep_the_chain_linear(database_url: str) -> None:
    """Eight connections appending at once leave seq gapless and the chain verifying."""
    writers, per_writer = 8, 25
    engines = [create_async_engine(database_url, pool_size=1) for _ in range(writers)]

    async def writer(index: int, eng: AsyncEngine) -> None:
        for j in range(per_writer):
            async with transaction(eng, actor=f"writer-{index}") as tx:
                payloads: list[EventPayload] = [
                    TokenRevoked(name=f"w{index}-{j}"),
                    PackageYanked(package="p", version=f"{index}.{j}"),
                ]
                await tx.record(*payloads)

    try:
        await asyncio.gather(*(writer(i, eng) for i, eng in enumerate(engines)))
        async with engines[0].connect() as conn:
            report = await verify_chain(conn)
            seqs = (await conn.execute(sa.text("SELECT seq FROM events ORDER BY seq"))).scalars()
            assert list(seqs) == list(range(1, writers * per_writer * 2 + 1))
        assert report.count == writers * per_writer * 2
    finally:
        for eng in engines:
            await eng.dispose()


async def test_rolled_back_append_leaves_no_gap(engine: AsyncEngine) -> None:
    """An append whose transaction rolls back does not consume a seq."""
    async with transaction(engine, actor="test") as tx:
        await tx.record(_blob(1))

    async def abandoned() -> None:
        async with transaction(engine, actor="test") as tx:
            await tx.record(_blob(2))
            raise RuntimeError("abandon")

    with pytest.raises(RuntimeError, match="abandon"):
        await abandoned()
    async with transaction(engine, actor="test") as tx:
        (event,) = await tx.record(_blob(3))
    assert event.seq == 2
    async with engine.connect() as conn:
        assert (await verify_chain(conn)).count == 2


@pytest.mark.parametrize(
    ("seq", "prev"),
    [(3, "head"), (1, "head"), (2, "zero")],
    ids=["skips-a-seq", "reuses-a-seq", "forks-the-chain"],
)
async def test_database_refuses_rows_that_do_not_continue_the_chain(
    engine: AsyncEngine, seq: int, prev: str
) -> None:
    """A row inserted past the lock that skips, reuses or forks is refused by the trigger."""
    async with transaction(engine, actor="test") as tx:
        (first,) = await tx.record(_blob(1))
    prev_hash = first.hash if prev == "head" else GENESIS_HASH
    body = _blob(9).to_cbor()
    row = {
        "seq": seq,
        "id": uuid.uuid4(),
        "type": str(EventType.BLOB_STORED),
        "occurred_at": datetime.now(UTC),
        "actor": "forger",
        "payload": body,
        "prev_hash": prev_hash,
        "hash": chain_hash(prev_hash, str(EventType.BLOB_STORED), body),
    }
    with pytest.raises(DBAPIError, match=r"does not continue the chain|duplicate key"):
        async with engine.begin() as conn:
            await conn.execute(events.insert(), [row])
    async with engine.connect() as conn:
        assert (await verify_chain(conn)).count == 1


async def test_edited_prev_hash_is_named_even_when_its_hash_matches(engine: AsyncEngine) -> None:
    """A row with prev_hash and hash rewritten consistently breaks the link at its seq."""
    async with transaction(engine, actor="test") as tx:
        appended = await tx.record(*(_blob(i) for i in range(1, 8)))
    forged_prev = b"\x09" * 32
    target = appended[4]
    forged = chain_hash(forged_prev, target.type, target.payload)
    async with engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE events DISABLE TRIGGER events_append_only"))
        await conn.execute(
            sa.text("UPDATE events SET prev_hash = :p, hash = :h WHERE seq = 5"),
            {"p": forged_prev, "h": forged},
        )
        await conn.execute(sa.text("ALTER TABLE events ENABLE TRIGGER events_append_only"))
    async with engine.connect() as conn:
        with pytest.raises(ChainBrokenError) as caught:
            await verify_chain(conn, page=3)
    assert caught.value.detail["seq"] == 5
    assert "prev_hash" in caught.value.message


async def test_verify_reads_every_page_of_one_snapshot(engine: AsyncEngine) -> None:
    """Verification over several pages counts every event, as of the caller's snapshot."""
    async with transaction(engine, actor="test") as tx:
        appended = await tx.record(*(_blob(i) for i in range(1, 11)))
    async with engine.connect() as conn:
        snap = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with snap.begin():
            first = await verify_chain(snap, page=3)
            async with transaction(engine, actor="test") as tx:
                await tx.record(_blob(11), _blob(12))
            again = await verify_chain(snap, page=3)
    assert (first.count, first.head_seq, first.head_hash) == (10, 10, appended[-1].hash)
    assert again == first
    async with engine.connect() as conn:
        assert (await verify_chain(conn, page=4)).count == 12
