"""Read-side look-ups over the blob views: ``blobs`` and ``storage_locations``.

Owns every read of those two tables outside ``views/``: one blob with its
copies (``get_blob``), sha256 by blake3, whether a batch of blobs is held
(``held_blobs``, one statement for ``POST /v1/blobs/exists``, DESIGN section
10) or recorded (``recorded_blobs``, for publish), which backends hold a
readable copy (verified first, then by name), and the statements behind
``storage verify`` (live locations of a backend, their totals, the states of
listed objects), ``storage replicate`` (blobs by sha256 with their readable
copies) and ``storage status`` (copies by backend and state, the failed and
missing ones).

Each function takes an ``AsyncConnection`` and returns plain values or
records; the caller owns the connection, the transaction and what the answer
means (configured backends, routing). Walks are keyset-paginated by sha256.
Nothing here writes. Not here: the write side and ``views.readable_copies``
(which the journal runs under the log lock) are ``views/blobs.py``; packages
are ``queries.packages``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from artifactstore.db.tables import blobs, storage_locations
from artifactstore.digests import BlobDigests, Digest
from artifactstore.errors import BlobNotFoundError
from artifactstore.registry.queries.paging import IN_BATCH
from artifactstore.registry.records import BlobRecord, LocationRecord
from artifactstore.views import LocationState

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection

    from artifactstore.registry.ingest import Expected

__all__ = [
    "RecordedBlob",
    "blob_page",
    "count_locations",
    "get_blob",
    "held_blobs",
    "live_locations",
    "live_totals",
    "location_states",
    "locations_in_states",
    "readable_backends",
    "readable_backends_of",
    "recorded_blobs",
    "sha256_of_blake3",
]

_BYTEA_ARRAY = pg.ARRAY(sa.LargeBinary)


def _blob_digests(sha256: bytes, blake3: bytes, size: int) -> BlobDigests:
    """A row's digests and size as one value."""
    return BlobDigests(Digest("sha256", bytes(sha256)), Digest("blake3", bytes(blake3)), int(size))


async def sha256_of_blake3(conn: AsyncConnection, blake3: Digest) -> Digest | None:
    """The sha256 of the blob whose blake3 is ``blake3``, or None when none is recorded."""
    raw = await conn.scalar(sa.select(blobs.c.sha256).where(blobs.c.blake3 == blake3.raw).limit(1))
    return None if raw is None else Digest("sha256", bytes(raw))


@dataclass(frozen=True, slots=True)
class RecordedBlob:
    """A recorded blob's digests and the backends holding a readable copy of it."""

    digests: BlobDigests
    backends: frozenset[str]


async def recorded_blobs(conn: AsyncConnection, raws: Sequence[bytes]) -> dict[bytes, RecordedBlob]:
    """The recorded blobs among ``raws`` (sha256 bytes), one statement per 1,000."""
    readable = storage_locations.c.state.in_(LocationState.READABLE)
    found: dict[bytes, RecordedBlob] = {}
    unique = list(dict.fromkeys(raws))
    for start in range(0, len(unique), IN_BATCH):
        rows = await conn.execute(
            sa.select(
                blobs.c.sha256,
                blobs.c.blake3,
                blobs.c.size,
                sa.func.array_agg(storage_locations.c.backend).filter(readable).label("backends"),
            )
            .select_from(
                blobs.outerjoin(storage_locations, storage_locations.c.sha256 == blobs.c.sha256)
            )
            .where(blobs.c.sha256.in_(unique[start : start + IN_BATCH]))
            .group_by(blobs.c.sha256)
        )
        for r in rows:
            digests = _blob_digests(r.sha256, r.blake3, r.size)
            found[digests.sha256.raw] = RecordedBlob(digests, frozenset(r.backends or ()))
    return found


async def held_blobs(
    conn: AsyncConnection, wanted: Sequence[Expected], targets: Sequence[str]
) -> list[BlobDigests | None]:
    """For each entry, in order, the blob it names if held readable on every target, else None.

    An entry names a blob by sha256, blake3 or both (every digest and size
    given must agree with the blob). One statement for the whole batch: the
    entries go in as arrays, each is looked up through the primary key or
    ``ix_blobs_blake3``, and a blob counts only when each of ``targets`` has
    a ``stored`` or ``verified`` location for it.
    """
    if not wanted:
        return []
    entries = (
        sa.func.unnest(
            sa.bindparam("i", list(range(len(wanted))), type_=pg.ARRAY(sa.Integer)),
            sa.bindparam(
                "s", [w.sha256.raw if w.sha256 else None for w in wanted], type_=_BYTEA_ARRAY
            ),
            sa.bindparam(
                "b", [w.blake3.raw if w.blake3 else None for w in wanted], type_=_BYTEA_ARRAY
            ),
            sa.bindparam("n", [w.size for w in wanted], type_=pg.ARRAY(sa.BigInteger)),
        )
        .table_valued("i", "sha256", "blake3", "size", name="wanted")
        .render_derived()
    )
    named = sa.union_all(
        sa.select(blobs).where(blobs.c.sha256 == entries.c.sha256),
        sa.select(blobs).where(entries.c.sha256.is_(None), blobs.c.blake3 == entries.c.blake3),
    ).lateral("found")
    loc = storage_locations
    copies = (
        sa.select(sa.func.count())
        .where(
            loc.c.sha256 == named.c.sha256,
            loc.c.backend.in_(list(targets)),
            loc.c.state.in_(LocationState.READABLE),
        )
        .scalar_subquery()
    )
    query = (
        sa.select(entries.c.i, named.c.sha256, named.c.blake3, named.c.size)
        .select_from(entries.join(named, sa.true()))
        .where(
            sa.or_(entries.c.blake3.is_(None), named.c.blake3 == entries.c.blake3),
            sa.or_(entries.c.size.is_(None), named.c.size == entries.c.size),
            copies == len(set(targets)),
        )
    )
    found: list[BlobDigests | None] = [None] * len(wanted)
    for row in await conn.execute(query):
        found[row.i] = _blob_digests(row.sha256, row.blake3, row.size)
    return found


async def get_blob(conn: AsyncConnection, sha256: Digest) -> BlobRecord:
    """The blob with its copies (one statement).

    Raises:
        BlobNotFoundError: the registry has never stored it.
    """
    sl = storage_locations
    rows = (
        await conn.execute(
            sa.select(
                blobs.c.blake3,
                blobs.c.size,
                blobs.c.stored_at,
                sl.c.backend,
                sl.c.key,
                sl.c.state,
                sl.c.detail,
                sl.c.updated_at,
                sl.c.verified_at,
            )
            .select_from(blobs.outerjoin(sl, sl.c.sha256 == blobs.c.sha256))
            .where(blobs.c.sha256 == sha256.raw)
            .order_by(sl.c.backend)
        )
    ).all()
    if not rows:
        raise BlobNotFoundError(f"blob {sha256} not found", sha256=sha256.hex)
    first = rows[0]
    return BlobRecord(
        sha256=sha256,
        blake3=Digest("blake3", bytes(first.blake3)),
        size=first.size,
        stored_at=first.stored_at,
        locations=tuple(
            LocationRecord(
                backend=r.backend,
                key=r.key,
                state=r.state,
                detail=r.detail,
                updated_at=r.updated_at,
                verified_at=r.verified_at,
            )
            for r in rows
            if r.backend is not None
        ),
    )


def _verified_first(copies: Iterable[tuple[str, str]]) -> list[str]:
    """The backends of ``(backend, state)`` pairs: verified copies first, then by name."""
    return [b for _, b in sorted((state != LocationState.VERIFIED, b) for b, state in copies)]


async def readable_backends(conn: AsyncConnection, sha256: Digest) -> list[str]:
    """Backends recorded with a readable copy of the blob, verified copies first, then by name.

    Every backend the view names, configured or not: the caller filters.
    """
    sl = storage_locations
    rows = (
        await conn.execute(
            sa.select(sl.c.backend, sl.c.state)
            .where(sl.c.sha256 == sha256.raw, sl.c.state.in_(LocationState.READABLE))
            .order_by(sl.c.backend)
        )
    ).all()
    return _verified_first((r.backend, r.state) for r in rows)


async def readable_backends_of(
    conn: AsyncConnection, raws: Sequence[bytes]
) -> dict[bytes, list[str]]:
    """``readable_backends`` of each blob of ``raws`` (sha256 bytes) that has any.

    One statement for a page of a walk (at most ``IN_BATCH`` keys); none for no keys.
    """
    if not raws:
        return {}
    sl = storage_locations
    rows = await conn.execute(
        sa.select(sl.c.sha256, sl.c.backend, sl.c.state).where(
            sl.c.sha256.in_(list(raws)), sl.c.state.in_(LocationState.READABLE)
        )
    )
    copies: dict[bytes, list[tuple[str, str]]] = {}
    for r in rows:
        copies.setdefault(bytes(r.sha256), []).append((r.backend, r.state))
    return {raw: _verified_first(pairs) for raw, pairs in copies.items()}


async def blob_page(conn: AsyncConnection, *, after: bytes, limit: int) -> list[BlobDigests]:
    """Up to ``limit`` blobs whose sha256 sorts after ``after``, by sha256."""
    rows = (
        await conn.execute(
            sa.select(blobs.c.sha256, blobs.c.blake3, blobs.c.size)
            .where(blobs.c.sha256 > after)
            .order_by(blobs.c.sha256)
            .limit(limit)
        )
    ).all()
    return [_blob_digests(r.sha256, r.blake3, r.size) for r in rows]


def _live_on(backend: str) -> tuple[sa.ColumnElement[bool], ...]:
    """Conditions for the copies on ``backend`` that are not ``deleted``."""
    sl = storage_locations
    return (sl.c.backend == backend, sl.c.state != LocationState.DELETED)


async def live_locations(
    conn: AsyncConnection, backend: str, *, after: bytes, limit: int
) -> list[BlobDigests]:
    """Up to ``limit`` blobs with a copy on ``backend`` that is not ``deleted``, after ``after``.

    Keyset-paginated by sha256; each with the blob's digests and size.
    """
    sl = storage_locations
    rows = (
        await conn.execute(
            sa.select(sl.c.sha256, blobs.c.blake3, blobs.c.size)
            .join(blobs, blobs.c.sha256 == sl.c.sha256)
            .where(*_live_on(backend), sl.c.sha256 > after)
            .order_by(sl.c.sha256)
            .limit(limit)
        )
    ).all()
    return [_blob_digests(r.sha256, r.blake3, r.size) for r in rows]


async def live_totals(conn: AsyncConnection, backend: str) -> tuple[int, int]:
    """How many copies ``live_locations`` walks on ``backend``, and their bytes."""
    sl = storage_locations
    row = (
        await conn.execute(
            sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(blobs.c.size), 0))
            .select_from(sl)
            .join(blobs, blobs.c.sha256 == sl.c.sha256)
            .where(*_live_on(backend))
        )
    ).one()
    return int(row[0]), int(row[1])


async def location_states(
    conn: AsyncConnection, backend: str, raws: Sequence[bytes]
) -> dict[bytes, str]:
    """The state of the location on ``backend`` of each blob of ``raws`` that has one."""
    sl = storage_locations
    rows = await conn.execute(
        sa.select(sl.c.sha256, sl.c.state).where(
            sl.c.backend == backend, sl.c.sha256.in_(list(raws))
        )
    )
    return {bytes(r.sha256): r.state for r in rows}


async def count_locations(conn: AsyncConnection) -> list[tuple[str, str, int]]:
    """``(backend, state, copies)`` for every pair that has copies."""
    sl = storage_locations
    rows = (
        await conn.execute(
            sa.select(sl.c.backend, sl.c.state, sa.func.count()).group_by(sl.c.backend, sl.c.state)
        )
    ).all()
    return [(backend, state, int(n)) for backend, state, n in rows]


async def locations_in_states(
    conn: AsyncConnection, states: Sequence[str], *, limit: int
) -> list[tuple[Digest, str, str, str]]:
    """Up to ``limit`` copies in one of ``states``: ``(sha256, backend, state, detail)``.

    Ordered by backend, then sha256.
    """
    sl = storage_locations
    rows = (
        await conn.execute(
            sa.select(sl.c.sha256, sl.c.backend, sl.c.state, sl.c.detail)
            .where(sl.c.state.in_(states))
            .order_by(sl.c.backend, sl.c.sha256)
            .limit(limit)
        )
    ).all()
    return [(Digest("sha256", bytes(r.sha256)), r.backend, r.state, r.detail) for r in rows]
