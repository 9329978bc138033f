"""Journal transactions: the one home of the log lock, and one event per stored copy."""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

import artifactstore
from artifactstore.digests import hash_bytes
from artifactstore.events import BlobStored
from artifactstore.registry import Registry
from artifactstore.registry.journal import transaction

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from artifactstore.config import Settings

SOURCE = Path(artifactstore.__file__).parent
LOCKING = re.compile(r"LOCK\s+TABLE|FOR\s+UPDATE|with_for_update|advisory_xact_lock", re.IGNORECASE)


def test_the_log_lock_is_named_in_one_module() -> None:
    """Only ``events/log.py`` takes the log's lock, and only the journal and replay call it."""
    naming = sorted(
        str(path.relative_to(SOURCE))
        for path in SOURCE.rglob("*.py")
        if "log_head" in path.read_text() and LOCKING.search(path.read_text())
    )
    assert naming == ["events/log.py"]
    takers = sorted(
        str(path.relative_to(SOURCE))
        for path in SOURCE.rglob("*.py")
        if re.search(r"\block_log\(", path.read_text()) and path.name != "log.py"
    )
    assert set(takers) <= {"registry/journal.py", "registry/rebuild.py"}
    assert "registry/journal.py" in takers


async def _blob_stored_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            sa.text("SELECT count(*) FROM events WHERE type = 'v1.blob.stored'")
        )
    return int(count or 0)


async def test_a_copy_recorded_by_two_writers_in_turn_is_one_event(engine: AsyncEngine) -> None:
    """Both writers stored the object before either recorded it: the second record is dropped."""
    digests = hash_bytes(b"the same bytes, written twice")
    copy = BlobStored.copy_of(digests, "local", "sha256/ab/cd/x")
    async with transaction(engine, actor="first") as tx:
        first = await tx.record_copies([copy])
    async with transaction(engine, actor="second") as tx:
        second = await tx.record_copies([copy])
        same_batch = await tx.record_copies([copy, copy])
    assert first == [copy]
    assert second == []
    assert same_batch == []
    assert await _blob_stored_count(engine) == 1


async def test_a_copy_on_another_backend_is_recorded(engine: AsyncEngine) -> None:
    """The check is per (blob, backend): a second backend's copy is its own event."""
    digests = hash_bytes(b"two backends")
    async with transaction(engine, actor="t") as tx:
        await tx.record_copies([BlobStored.copy_of(digests, "local", "k")])
    async with transaction(engine, actor="t") as tx:
        recorded = await tx.record_copies([BlobStored.copy_of(digests, "db", "k")])
    assert [c.backend for c in recorded] == ["db"]
    assert await _blob_stored_count(engine) == 2


async def test_concurrent_small_puts_of_one_blob_record_one_copy(
    settings: Settings, engine: AsyncEngine
) -> None:
    """Four registries (own pools) storing the same bytes at once record one copy, bytes intact."""
    data = b"raced\n" * 5000
    registries = [await Registry.open(settings) for _ in range(4)]
    try:
        results = await asyncio.gather(*(r.put_small(data) for r in registries for _ in range(3)))
        stream = await registries[0].open_blob(results[0][0].sha256)
        assert hashlib.sha256(await stream.read_all()).digest() == hashlib.sha256(data).digest()
    finally:
        for r in registries:
            await r.aclose()
    assert sum(created for _, created in results) == 1
    assert await _blob_stored_count(engine) == 1
