"""The conformance suite against the ``postgres`` backend, plus what only blocks have.

The hooks reach ``blob_objects`` and ``blob_blocks`` with plain SQL on the
backend's engine. PostgreSQL has no place for a malformed key (rows are keyed
by sha256), so ``raw_write`` of a key that names no digest stores nothing.
The debris of a crashed write is nothing at all (the transaction rolls
back); ``crash_write`` plants something stronger: half the blocks with no
object row, which head, get and iteration must all ignore.
"""

from __future__ import annotations

import socket
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from tests.conformance.suite import MIB, BackendConformance, blob, sha, stream_of

from artifactstore.config import PostgresBackendSettings
from artifactstore.db.tables import blob_blocks, blob_objects
from artifactstore.digests import Digest
from artifactstore.errors import BackendUnavailableError, SizeMismatchError
from artifactstore.storage.factory import open_backend
from artifactstore.storage.postgres import POOL_SIZE, PostgresBackend, open_postgres
from artifactstore.storage.spi import SliceByteRange, digest_from_key, object_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from artifactstore.storage.spi import StorageBackend

SMALL_BLOCK = 256 * 1024


def _conforms(backend: PostgresBackend) -> StorageBackend:
    """Mypy proves here that PostgresBackend implements the protocol."""
    return backend


def _pg(backend: StorageBackend) -> PostgresBackend:
    assert isinstance(backend, PostgresBackend)
    return backend


async def _replace(backend: PostgresBackend, digest: Digest, data: bytes, *, row: bool) -> None:
    """Write blocks (and the object row if ``row``) directly, replacing what was there."""
    where_b = sa.and_(blob_blocks.c.backend == backend.name, blob_blocks.c.sha256 == digest.raw)
    where_o = sa.and_(blob_objects.c.backend == backend.name, blob_objects.c.sha256 == digest.raw)
    bs = backend.block_size
    async with backend.engine.begin() as conn:
        await conn.execute(sa.delete(blob_blocks).where(where_b))
        await conn.execute(sa.delete(blob_objects).where(where_o))
        for n, start in enumerate(range(0, len(data), bs)):
            await conn.execute(
                sa.insert(blob_blocks).values(
                    backend=backend.name,
                    sha256=digest.raw,
                    block_no=n,
                    data=data[start : start + bs],
                )
            )
        if row:
            await conn.execute(
                sa.insert(blob_objects).values(
                    backend=backend.name,
                    sha256=digest.raw,
                    size=len(data),
                    block_size=bs,
                    created_at=datetime.now(UTC),
                )
            )


@pytest.fixture(scope="module")
async def shared_database_url(pg_admin_url: str, migrated_template: str) -> AsyncIterator[str]:
    """One migrated database for the module; tests keep apart by backend name."""
    admin = create_async_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    name = f"pgconf_{uuid.uuid4().hex}"
    try:
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template}"'))
        yield make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


class TestPostgresBackend(BackendConformance):
    """The contract in the registry's (migrated) database, one backend name per test."""

    block_size = 1024 * 1024

    @pytest.fixture
    async def backend(self, shared_database_url: str) -> AsyncIterator[StorageBackend]:
        """A postgres backend, under a name of its own, opened through the factory."""
        settings = PostgresBackendSettings(
            name=f"pg-{uuid.uuid4().hex[:12]}", block_size=self.block_size
        )
        backend = await open_backend(settings, database_url=shared_database_url)
        yield _conforms(_pg(backend))
        await backend.aclose()

    async def raw_write(self, backend: StorageBackend, key: str, data: bytes) -> None:
        """Replace the object's row and blocks by SQL; a key naming no digest stores nothing."""
        digest = digest_from_key(key)
        if digest is None or object_key(digest) != key:
            return
        await _replace(_pg(backend), digest, data, row=True)

    async def raw_read(self, backend: StorageBackend, key: str) -> bytes | None:
        """The object's blocks joined, or None without an object row."""
        digest = digest_from_key(key)
        if digest is None:
            return None
        pg = _pg(backend)
        async with pg.engine.connect() as conn:
            row = await conn.scalar(
                sa.select(blob_objects.c.size).where(
                    blob_objects.c.backend == pg.name, blob_objects.c.sha256 == digest.raw
                )
            )
            if row is None:
                return None
            parts = await conn.scalars(
                sa.select(blob_blocks.c.data)
                .where(blob_blocks.c.backend == pg.name, blob_blocks.c.sha256 == digest.raw)
                .order_by(blob_blocks.c.block_no)
            )
            return b"".join(parts)

    async def raw_keys(self, backend: StorageBackend) -> set[str]:
        """Keys of every object row and of every blob that has blocks (debris included)."""
        pg = _pg(backend)
        async with pg.engine.connect() as conn:
            objects = await conn.scalars(
                sa.select(blob_objects.c.sha256).where(blob_objects.c.backend == pg.name)
            )
            keys = {bytes(r) for r in objects}
            blocks = await conn.scalars(
                sa.select(blob_blocks.c.sha256).where(blob_blocks.c.backend == pg.name).distinct()
            )
            keys |= {bytes(r) for r in blocks}
        return {object_key(Digest("sha256", raw)) for raw in keys}

    async def crash_write(self, backend: StorageBackend, sha256: Digest, data: bytes) -> None:
        """Half the blocks committed without an object row (worse than a real crash leaves)."""
        await _replace(_pg(backend), sha256, data[: len(data) // 2], row=False)

    async def test_block_layout(self, backend: StorageBackend) -> None:
        """A blob is cut into block_size rows, the last shorter, with one object row."""
        pg = _pg(backend)
        data = blob(2 * pg.block_size + 10, seed=30)
        digest = await self.put(backend, data)
        async with pg.engine.connect() as conn:
            sizes = (
                await conn.execute(
                    sa.select(blob_blocks.c.block_no, sa.func.length(blob_blocks.c.data))
                    .where(blob_blocks.c.backend == pg.name, blob_blocks.c.sha256 == digest.raw)
                    .order_by(blob_blocks.c.block_no)
                )
            ).all()
            row = (
                await conn.execute(
                    sa.select(blob_objects).where(
                        blob_objects.c.backend == pg.name, blob_objects.c.sha256 == digest.raw
                    )
                )
            ).one()
        assert [tuple(s) for s in sizes] == [(0, pg.block_size), (1, pg.block_size), (2, 10)]
        assert (row.size, row.block_size) == (len(data), pg.block_size)

    async def test_failed_copies_leave_the_pool_usable(self, backend: StorageBackend) -> None:
        """Sources that fail mid-COPY, more often than the pool has connections, store nothing."""
        pg = _pg(backend)
        data = blob(3 * pg.block_size + 7, seed=35)
        digest = sha(data)

        class SourceFailedError(Exception):
            pass

        async def failing() -> AsyncIterator[bytes]:
            yield data[: 2 * pg.block_size]
            raise SourceFailedError

        for _ in range(2 * POOL_SIZE + 1):
            with pytest.raises(SourceFailedError):
                await backend.put_stream(digest, failing(), len(data))
            assert await backend.head(digest) is None
        await backend.put_stream(digest, stream_of(data), len(data))
        assert await self.read(await backend.get(digest)) == data

    async def test_corrupted_block_is_served_as_stored(self, backend: StorageBackend) -> None:
        """A byte flipped in a block by SQL comes back flipped (verify's job to notice)."""
        pg = _pg(backend)
        bs = pg.block_size
        data = blob(bs + 100, seed=31)
        digest = await self.put(backend, data)
        async with pg.engine.begin() as conn:
            await conn.execute(
                sa.update(blob_blocks)
                .where(
                    blob_blocks.c.backend == pg.name,
                    blob_blocks.c.sha256 == digest.raw,
                    blob_blocks.c.block_no == 1,
                )
                .values(data=sa.func.set_byte(blob_blocks.c.data, 0, 0xFF))
            )
        got = await self.read(await backend.get(digest))
        assert got[:bs] == data[:bs]
        assert got[bs] == 0xFF
        assert got[bs + 1 :] == data[bs + 1 :]

    async def test_missing_block_fails_the_read(self, backend: StorageBackend) -> None:
        """A block deleted behind the backend's back makes the read fail, not come back short."""
        pg = _pg(backend)
        data = blob(2 * MIB + 5, seed=32)
        digest = await self.put(backend, data)
        async with pg.engine.begin() as conn:
            await conn.execute(
                sa.delete(blob_blocks).where(
                    blob_blocks.c.backend == pg.name,
                    blob_blocks.c.sha256 == digest.raw,
                    blob_blocks.c.block_no == 1,
                )
            )
        stream = await backend.get(digest)
        with pytest.raises(SizeMismatchError):
            await stream.read_all()

    async def test_closed_backend_refuses_work(self, backend: StorageBackend) -> None:
        """After aclose the backend raises BackendUnavailableError and reports unhealthy."""
        await backend.aclose()
        with pytest.raises(BackendUnavailableError):
            await backend.put_stream(sha(b"x"), stream_of(b"x"), 1)
        assert not (await backend.health()).ok


class TestPostgresSmallBlocks(TestPostgresBackend):
    """The contract again with 256 KiB blocks, so ranges cross many block edges."""

    block_size = SMALL_BLOCK

    async def test_range_reads_only_needed_blocks(self, backend: StorageBackend) -> None:
        """A range inside one block is served after those blocks alone are intact."""
        pg = _pg(backend)
        data = blob(8 * SMALL_BLOCK, seed=33)
        digest = await self.put(backend, data)
        async with pg.engine.begin() as conn:
            # Damage every block but 3; a range within block 3 must not notice.
            await conn.execute(
                sa.delete(blob_blocks).where(
                    blob_blocks.c.backend == pg.name,
                    blob_blocks.c.sha256 == digest.raw,
                    blob_blocks.c.block_no != 3,
                )
            )
        start = 3 * SMALL_BLOCK + 7
        stream = await backend.get(digest, SliceByteRange(start, start + 1000))
        assert await stream.read_all() == data[start : start + 1000]


async def test_own_database_gets_its_tables(empty_database_url: str) -> None:
    """With its own url the backend creates exactly its two tables in an empty database."""
    settings = PostgresBackendSettings(name="elsewhere", url=empty_database_url)
    data = blob(3000, seed=40)
    for _ in range(2):  # the second open finds the tables and keeps the data
        async with await open_postgres(settings, None) as backend:
            assert (await backend.health()).ok
            await backend.put_stream(sha(data), stream_of(data), len(data))
            assert await (await backend.get(sha(data))).read_all() == data
    engine = create_async_engine(empty_database_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.scalars(
                sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            )
            assert sorted(tables) == ["blob_blocks", "blob_objects"]
    finally:
        await engine.dispose()


async def test_unreachable_database_is_unavailable() -> None:
    """A url where nothing listens fails to open with BackendUnavailableError."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = PostgresBackendSettings(
        name="nowhere", url=f"postgresql+asyncpg://nobody@127.0.0.1:{port}/none"
    )
    with pytest.raises(BackendUnavailableError):
        await open_postgres(settings, None)
