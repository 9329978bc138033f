"""The ``postgres`` storage backend: blobs as ``bytea`` blocks in PostgreSQL.

Owns the tables ``blob_blocks`` (``backend, sha256, block_no, data``) and
``blob_objects`` (``backend, sha256, size, block_size, created_at``). A blob
is cut into blocks of ``block_size`` bytes (default 1 MiB, the last one
shorter); its ``blob_objects`` row is written in the same transaction as its
blocks, so the row's presence is what makes an object visible and a write is
atomic (DESIGN section 4: "postgres: one transaction"). Several backends may
share the tables; the ``backend`` column keeps them apart.

By default the blocks live in the registry's own database (the factory passes
its URL), where the Alembic migration created the tables. With
``storage.backends.<name>.url`` they live in another database, and
``open_postgres`` creates the two tables there if they are missing
(``metadata.create_all`` for just these two, under an advisory lock, plus
the ``STORAGE EXTERNAL`` setting of migration 0002); that database is never
migrated otherwise.

Concurrency: every put and delete of one blob takes a transaction-scoped
advisory lock keyed on (backend, sha256), so concurrent puts of the same
blob serialise instead of failing on the primary key; the last one rewrites
the object whole, which also repairs a copy damaged behind our back (like the
``local`` backend's rename). Reads fetch only the blocks a range touches, a
few blocks per short transaction, so memory stays at a few blocks whatever
the blob size and no read holds a connection while its consumer is slow.
A read that finds a block gone or of the wrong length (deleted or rewritten
mid-read, or damaged) fails with ``SizeMismatchError``.

This module does not hash (the registry does) and knows nothing of events.
Database errors leave as ``BackendUnavailableError``; absence is
``BlobNotFoundError`` or ``None``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import asyncpg  # type: ignore[import-untyped]  # no stubs; only for COPY
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from artifactstore.db.engine import create_engine
from artifactstore.db.tables import blob_blocks, blob_objects, metadata
from artifactstore.digests import DIGEST_BYTES, Digest
from artifactstore.errors import (
    BackendUnavailableError,
    BlobNotFoundError,
    ConfigError,
    SizeMismatchError,
)
from artifactstore.resources import AsyncCloseable
from artifactstore.storage.spi import (
    DEFAULT_READ_CHUNK,
    BackendHealth,
    ObjectInfo,
    ObjectStream,
    object_key,
    resolve_range,
)
from artifactstore.storage.streams import exact_size, rechunk

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from artifactstore.config import PostgresBackendSettings
    from artifactstore.storage.spi import ByteRange, ResolvedRange

__all__ = [
    "MAX_BLOCK_SIZE",
    "POOL_SIZE",
    "PostgresBackend",
    "open_postgres",
]

# The backend's own pool: a put holds one connection for its whole stream, a
# read one per batch; verify runs a handful at once.
POOL_SIZE = 4
# A bytea value may be up to 1 GB; blocks far below that keep memory bounded.
MAX_BLOCK_SIZE = 64 * 1024 * 1024
# A read fetches about this many bytes of blocks per query (at least one block).
_FETCH_BYTES = 4 * DEFAULT_READ_CHUNK
_LIST_PAGE = 1000
_BLOCK_COLUMNS = ("backend", "sha256", "block_no", "data")
_LOCK_NAMESPACE = b"artifactstore.storage.postgres\x00"
_STORAGE_EXTERNAL = "ALTER TABLE blob_blocks ALTER COLUMN data SET STORAGE EXTERNAL"
# Serialises CREATE TABLE IF NOT EXISTS of concurrent openers on a foreign database.
_CREATE_TABLES_LOCK = int.from_bytes(
    hashlib.sha256(_LOCK_NAMESPACE + b"create-tables").digest()[:8], "big", signed=True
)


def _lock_key(backend: str, sha256: Digest) -> int:
    """A signed 64-bit advisory lock key for one blob of one backend."""
    digest = hashlib.sha256(_LOCK_NAMESPACE + backend.encode() + b"\x00" + sha256.raw).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass
class _SourceState:
    """Whether the caller's stream (not the database) raised."""

    failed: bool = False


async def _tracked(chunks: AsyncIterable[bytes], state: _SourceState) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through, remembering if the source raised."""
    try:
        async for chunk in chunks:
            yield chunk
    except BaseException:
        state.failed = True
        raise


async def _read_blocks(path: Path, block_size: int) -> AsyncIterator[bytes]:
    """A staged file in ``block_size`` reads on a worker thread, one block read ahead.

    The next block is read while the caller sends the current one, so the
    disk and the database work at the same time.
    """
    f: BinaryIO = await asyncio.to_thread(path.open, "rb")
    pending: asyncio.Future[bytes] | None = None
    try:
        pending = asyncio.ensure_future(asyncio.to_thread(f.read, block_size))
        while data := await pending:
            pending = asyncio.ensure_future(asyncio.to_thread(f.read, block_size))
            yield data
    finally:
        if pending is not None:
            # A read in flight cannot be stopped; let it end before closing.
            await asyncio.wait([pending])
            if not pending.cancelled():
                pending.exception()  # retrieved: an error here is moot
        await asyncio.to_thread(f.close)


class PostgresBackend(AsyncCloseable):
    """Blobs as ``bytea`` blocks; safe for concurrent use by tasks and processes."""

    def __init__(self, name: str, engine: AsyncEngine, *, block_size: int) -> None:
        if not 0 < block_size <= MAX_BLOCK_SIZE:
            raise ConfigError(
                f"block_size must be between 1 and {MAX_BLOCK_SIZE}, got {block_size}",
                key=f"storage.backends.{name}.block_size",
            )
        self._name = name
        self._engine = engine
        self._block_size = block_size
        self._closed = False

    @property
    def name(self) -> str:
        """The configured backend name."""
        return self._name

    @property
    def kind(self) -> str:
        """Always ``postgres``."""
        return "postgres"

    @property
    def block_size(self) -> int:
        """The size of the blocks new writes are cut into."""
        return self._block_size

    @property
    def engine(self) -> AsyncEngine:
        """The backend's own engine (tests and tools reach the tables through it)."""
        return self._engine

    def __repr__(self) -> str:
        return f"PostgresBackend(name={self._name!r}, block_size={self._block_size})"

    # -- helpers -----------------------------------------------------------------

    def _unavailable(self, what: str, exc: BaseException) -> BackendUnavailableError:
        return BackendUnavailableError(
            f"postgres backend {self._name!r}: {what}: {type(exc).__name__}: {exc}",
            backend=self._name,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailableError(f"postgres backend {self._name!r} is closed")

    def _where(self, table: sa.Table, sha256: Digest) -> sa.ColumnElement[bool]:
        return sa.and_(table.c.backend == self._name, table.c.sha256 == sha256.raw)

    async def _lock(self, conn: AsyncConnection, sha256: Digest) -> None:
        # Transaction-scoped: released at commit or rollback, never leaked by a crash.
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_lock_key(self._name, sha256))))

    async def _remove(self, conn: AsyncConnection, sha256: Digest) -> bool:
        await conn.execute(sa.delete(blob_blocks).where(self._where(blob_blocks, sha256)))
        gone = await conn.execute(
            sa.delete(blob_objects)
            .where(self._where(blob_objects, sha256))
            .returning(blob_objects.c.size)
        )
        return gone.first() is not None

    # -- writes ------------------------------------------------------------------

    async def _write(self, sha256: Digest, chunks: AsyncIterable[bytes], size: int) -> ObjectInfo:
        """Replace the object with ``size`` bytes from ``chunks`` in one transaction.

        The blocks go in with one binary ``COPY`` on the transaction's own
        connection (asyncpg's ``copy_records_to_table``), fed from the stream
        one block at a time, so memory stays at a few blocks and the server
        parses no SQL per block. The ``blob_objects`` row follows in the same
        transaction: a crash or an error before the commit leaves nothing.
        """
        self._check_open()
        source = _SourceState()
        blocks = rechunk(exact_size(_tracked(chunks, source), size), self._block_size)
        try:
            async with self._engine.begin() as conn:
                await self._lock(conn, sha256)
                await self._remove(conn, sha256)
                raw = await conn.get_raw_connection()
                driver: asyncpg.Connection = raw.driver_connection
                await driver.copy_records_to_table(
                    blob_blocks.name,
                    columns=_BLOCK_COLUMNS,
                    records=self._records(sha256, blocks),
                )
                await conn.execute(
                    insert(blob_objects)
                    .values(
                        backend=self._name,
                        sha256=sha256.raw,
                        size=size,
                        block_size=self._block_size,
                        created_at=datetime.now(UTC),
                    )
                    # The advisory lock makes a conflict impossible; this keeps
                    # a writer that bypasses the lock from failing a put.
                    .on_conflict_do_nothing(index_elements=["backend", "sha256"])
                )
        except (sa.exc.DBAPIError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            if source.failed:
                raise
            raise self._unavailable(f"cannot write {sha256}", exc) from exc
        return ObjectInfo(sha256=sha256, size=size, key=object_key(sha256))

    async def _records(
        self, sha256: Digest, blocks: AsyncIterable[bytes]
    ) -> AsyncIterator[tuple[str, bytes, int, bytes]]:
        """``blob_blocks`` rows for ``COPY``, in ``_BLOCK_COLUMNS`` order."""
        block_no = 0
        async for block in blocks:
            yield (self._name, sha256.raw, block_no, block)
            block_no += 1

    async def put_stream(
        self, sha256: Digest, chunks: AsyncIterable[bytes], size: int
    ) -> ObjectInfo:
        """Store exactly ``size`` bytes from ``chunks`` in one transaction; idempotent.

        Concurrent puts of one blob serialise on an advisory lock and all succeed.

        Raises:
            SizeMismatchError: the stream was shorter or longer; nothing is stored.
            BackendUnavailableError: the database refused or could not be reached.
        """
        return await self._write(sha256, chunks, size)

    async def put_file(self, sha256: Digest, path: Path, *, consume: bool = False) -> ObjectInfo:
        """Store a staged file, read block by block on a worker thread; ``consume`` removes it.

        Raises:
            BackendUnavailableError: the file could not be read or the database written.
        """
        self._check_open()
        path = Path(path)
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
        except OSError as exc:
            raise self._unavailable(f"cannot read {path}", exc) from exc
        try:
            info = await self._write(sha256, _read_blocks(path, self._block_size), size)
        except OSError as exc:
            raise self._unavailable(f"cannot read {path}", exc) from exc
        if consume:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        return info

    # -- reads -------------------------------------------------------------------

    async def _object_row(self, sha256: Digest) -> tuple[int, int] | None:
        """``(size, block_size)`` of the object, or None."""
        try:
            async with self._engine.connect() as conn:
                row = (
                    await conn.execute(
                        sa.select(blob_objects.c.size, blob_objects.c.block_size).where(
                            self._where(blob_objects, sha256)
                        )
                    )
                ).first()
        except (sa.exc.DBAPIError, OSError) as exc:
            raise self._unavailable(f"cannot look up {sha256}", exc) from exc
        return None if row is None else (int(row.size), int(row.block_size))

    async def head(self, sha256: Digest) -> ObjectInfo | None:
        """The stored object's info (from ``blob_objects``), or None when absent."""
        self._check_open()
        row = await self._object_row(sha256)
        if row is None:
            return None
        return ObjectInfo(sha256=sha256, size=row[0], key=object_key(sha256))

    async def get(self, sha256: Digest, byte_range: ByteRange | None = None) -> ObjectStream:
        """Open a streamed read of the whole object or a range, fetching only its blocks.

        Raises:
            BlobNotFoundError: no such object (checked before any byte flows).
            InvalidRangeError: the range selects no byte of the object.
        """
        self._check_open()
        row = await self._object_row(sha256)
        if row is None:
            raise BlobNotFoundError(
                f"{sha256} is not stored on backend {self._name!r}", backend=self._name
            )
        size, block_size = row
        resolved = resolve_range(byte_range, size)
        return ObjectStream(
            info=ObjectInfo(sha256=sha256, size=size, key=object_key(sha256)),
            range=resolved,
            chunks=self._stream(sha256, resolved, block_size),
        )

    async def _fetch(self, sha256: Digest, first: int, last: int) -> list[tuple[int, bytes]]:
        """Blocks ``first..last`` (inclusive) in order, in one short transaction."""
        try:
            async with self._engine.connect() as conn:
                result = await conn.execute(
                    sa.select(blob_blocks.c.block_no, blob_blocks.c.data)
                    .where(
                        self._where(blob_blocks, sha256),
                        blob_blocks.c.block_no.between(first, last),
                    )
                    .order_by(blob_blocks.c.block_no)
                )
                return [(int(r.block_no), bytes(r.data)) for r in result]
        except (sa.exc.DBAPIError, OSError) as exc:
            raise self._unavailable(f"cannot read {sha256}", exc) from exc

    async def _stream(
        self, sha256: Digest, resolved: ResolvedRange, block_size: int
    ) -> AsyncIterator[bytes]:
        """Yield ``resolved``'s bytes in pieces of at most ``DEFAULT_READ_CHUNK``."""
        if resolved.length == 0:
            return
        first = resolved.start // block_size
        last = (resolved.end - 1) // block_size
        per_fetch = max(1, _FETCH_BYTES // block_size)
        for batch_start in range(first, last + 1, per_fetch):
            batch_end = min(last, batch_start + per_fetch - 1)
            rows = await self._fetch(sha256, batch_start, batch_end)
            if [n for n, _ in rows] != list(range(batch_start, batch_end + 1)):
                raise SizeMismatchError(
                    f"{sha256} on {self._name!r}: blocks {batch_start}..{batch_end} are incomplete",
                    backend=self._name,
                )
            for block_no, data in rows:
                base = block_no * block_size
                if len(data) != min(block_size, resolved.size - base):
                    raise SizeMismatchError(
                        f"{sha256} on {self._name!r}: block {block_no} has {len(data)} bytes",
                        backend=self._name,
                    )
                lo = max(resolved.start - base, 0)
                hi = min(resolved.end - base, len(data))
                if lo == 0 and hi == len(data) <= DEFAULT_READ_CHUNK:
                    yield data  # the common case: a whole block, no copy
                    continue
                view = memoryview(data)
                for pos in range(lo, hi, DEFAULT_READ_CHUNK):
                    yield bytes(view[pos : min(hi, pos + DEFAULT_READ_CHUNK)])
            del rows

    # -- delete ------------------------------------------------------------------

    async def delete(self, sha256: Digest) -> bool:
        """Remove the object and its blocks in one transaction; True if it existed. Idempotent."""
        self._check_open()
        try:
            async with self._engine.begin() as conn:
                await self._lock(conn, sha256)
                return await self._remove(conn, sha256)
        except (sa.exc.DBAPIError, OSError) as exc:
            raise self._unavailable(f"cannot delete {sha256}", exc) from exc

    # -- inventory ---------------------------------------------------------------

    async def iter_objects(self) -> AsyncIterator[ObjectInfo]:
        """Every complete object (a ``blob_objects`` row), in sha256 order, keyset-paginated.

        Blocks without an object row (never visible) are not listed.
        """
        self._check_open()
        after = b""
        while True:
            try:
                async with self._engine.connect() as conn:
                    rows = (
                        await conn.execute(
                            sa.select(blob_objects.c.sha256, blob_objects.c.size)
                            .where(
                                blob_objects.c.backend == self._name,
                                blob_objects.c.sha256 > after,
                            )
                            .order_by(blob_objects.c.sha256)
                            .limit(_LIST_PAGE)
                        )
                    ).all()
            except (sa.exc.DBAPIError, OSError) as exc:
                raise self._unavailable("cannot list objects", exc) from exc
            for r in rows:
                raw = bytes(r.sha256)
                if len(raw) != DIGEST_BYTES:
                    continue  # not a digest: a row nobody of ours wrote
                digest = Digest("sha256", raw)
                yield ObjectInfo(sha256=digest, size=r.size, key=object_key(digest))
            if len(rows) < _LIST_PAGE:
                return
            after = bytes(rows[-1].sha256)

    # -- lifecycle ---------------------------------------------------------------

    async def health(self) -> BackendHealth:
        """Ok when ``SELECT 1`` answers and a probe row can be written (then rolled back)."""
        if self._closed:
            return BackendHealth(ok=False, detail="closed")
        try:
            async with self._engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
                try:
                    await conn.execute(
                        sa.insert(blob_objects).values(
                            backend=self._name,
                            sha256=os.urandom(32),
                            size=0,
                            block_size=self._block_size,
                            created_at=datetime.now(UTC),
                        )
                    )
                finally:
                    await conn.rollback()
        except (sa.exc.DBAPIError, OSError) as exc:
            return BackendHealth(ok=False, detail=f"{type(exc).__name__}: {exc}".splitlines()[0])
        return BackendHealth(ok=True, detail=f"postgres, {self._block_size}-byte blocks")

    async def aclose(self) -> None:
        """Dispose the backend's own pool; the backend is unusable afterwards."""
        self._closed = True
        await self._engine.dispose()


async def _create_tables(engine: AsyncEngine) -> None:
    """Create ``blob_blocks`` and ``blob_objects`` if missing (a database Alembic does not own)."""
    async with engine.begin() as conn:
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_CREATE_TABLES_LOCK)))
        await conn.run_sync(
            metadata.create_all, tables=[blob_blocks, blob_objects], checkfirst=True
        )
        # As migration 0002 does for the registry database: blocks are stored
        # out of line without a pglz attempt (most artifacts are compressed).
        await conn.execute(sa.text(_STORAGE_EXTERNAL))


async def open_postgres(
    settings: PostgresBackendSettings, database_url: str | None
) -> PostgresBackend:
    """Open the ``postgres`` backend on ``settings.url``, else the registry's database.

    With its own ``url`` the two tables are created there if missing; in the
    registry's database the migration owns them.

    Raises:
        ConfigError: no database to use, or a bad ``block_size``.
        BackendUnavailableError: the database cannot be reached.
    """
    url = settings.url or database_url
    if not url:
        raise ConfigError(
            f"postgres backend {settings.name!r} needs a url (no registry database was given)",
            key=f"storage.backends.{settings.name}.url",
        )
    engine = create_engine(url, pool_size=POOL_SIZE)
    try:
        backend = PostgresBackend(settings.name, engine, block_size=settings.block_size)
        if settings.url:
            await _create_tables(engine)
        else:
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
    except (sa.exc.DBAPIError, OSError) as exc:
        await engine.dispose()
        raise BackendUnavailableError(
            f"postgres backend {settings.name!r}: cannot reach the database: "
            f"{type(exc).__name__}: {exc}".splitlines()[0],
            backend=settings.name,
        ) from exc
    except BaseException:
        await engine.dispose()
        raise
    return backend
