"""Read-side look-ups over the views: blobs, packages, versions, files.

``held_blobs`` answers a whole batch of "is this blob here?" in one statement
(``POST /v1/blobs/exists``, DESIGN section 10).

Lists are keyset-paginated (``WHERE key > :last ORDER BY key LIMIT n``) with
opaque cursors, never OFFSET, so page n costs what page 1 costs. Absent things
raise the ``NotFoundError`` family; nothing here writes.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from artifactstore.db.tables import (
    blobs,
    package_files,
    package_versions,
    packages,
    storage_locations,
)
from artifactstore.digests import BlobDigests, Digest
from artifactstore.errors import (
    BlobNotFoundError,
    FileNotInVersionError,
    InvalidInputError,
    PackageNotFoundError,
    VersionNotFoundError,
)
from artifactstore.registry.records import (
    BlobRecord,
    FileRecord,
    LocationRecord,
    PackageRecord,
    Page,
    VersionRecord,
)
from artifactstore.views import LocationState

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection

    from artifactstore.registry.ingest import Expected

__all__ = [
    "MAX_PAGE",
    "RecordedBlob",
    "decode_cursor",
    "encode_cursor",
    "find_version",
    "get_blob",
    "get_file",
    "get_package",
    "get_version",
    "held_blobs",
    "list_files",
    "list_packages",
    "list_versions",
    "recorded_blobs",
    "sha256_of_blake3",
]

MAX_PAGE = 1000
_IN_BATCH = 1000  # keys per IN list: well under asyncpg's 32,767 parameters
_BYTEA_ARRAY = pg.ARRAY(sa.LargeBinary)


def encode_cursor(*parts: str) -> str:
    """An opaque cursor naming the last item of a page."""
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> tuple[str, ...]:
    """The parts of a cursor made by ``encode_cursor``.

    Raises:
        InvalidInputError: the cursor is malformed.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError("malformed cursor", cursor=cursor[:100]) from exc
    if not (
        isinstance(parts, list)
        and len(parts) == arity
        and all(isinstance(p, str) and "\x00" not in p for p in parts)
    ):
        raise InvalidInputError("malformed cursor", cursor=cursor[:100])
    return tuple(parts)


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInputError(f"limit must be between 1 and {MAX_PAGE}", limit=limit)
    return limit


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
    for start in range(0, len(unique), _IN_BATCH):
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
            .where(blobs.c.sha256.in_(unique[start : start + _IN_BATCH]))
            .group_by(blobs.c.sha256)
        )
        for r in rows:
            raw = bytes(r.sha256)
            digests = BlobDigests(Digest("sha256", raw), Digest("blake3", bytes(r.blake3)), r.size)
            found[raw] = RecordedBlob(digests, frozenset(r.backends or ()))
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
        found[row.i] = BlobDigests(
            Digest("sha256", bytes(row.sha256)), Digest("blake3", bytes(row.blake3)), row.size
        )
    return found


async def get_blob(conn: AsyncConnection, sha256: Digest) -> BlobRecord:
    """The blob with its copies.

    Raises:
        BlobNotFoundError: the registry has never stored it.
    """
    row = (await conn.execute(sa.select(blobs).where(blobs.c.sha256 == sha256.raw))).first()
    if row is None:
        raise BlobNotFoundError(f"blob {sha256} not found", sha256=sha256.hex)
    locs = (
        await conn.execute(
            sa.select(storage_locations)
            .where(storage_locations.c.sha256 == sha256.raw)
            .order_by(storage_locations.c.backend)
        )
    ).all()
    return BlobRecord(
        sha256=sha256,
        blake3=Digest("blake3", bytes(row.blake3)),
        size=row.size,
        stored_at=row.stored_at,
        locations=tuple(
            LocationRecord(
                backend=r.backend,
                key=r.key,
                state=r.state,
                detail=r.detail,
                updated_at=r.updated_at,
                verified_at=r.verified_at,
            )
            for r in locs
        ),
    )


def _package(row: sa.Row[tuple[object, ...]]) -> PackageRecord:
    m = row._mapping  # noqa: SLF001 - SQLAlchemy's public row API
    return PackageRecord(
        name=m["name"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        version_count=m["version_count"],
    )


def _version(row: sa.Row[tuple[object, ...]]) -> VersionRecord:
    m = row._mapping  # noqa: SLF001
    return VersionRecord(
        package=m["package"],
        version=m["version"],
        manifest_sha256=Digest("sha256", bytes(m["manifest_sha256"])),
        published_at=m["published_at"],
        actor=m["actor"],
        producer=m["producer"],
        retention_class=m["retention_class"],
        file_count=m["file_count"],
        total_size=m["total_size"],
        yanked=m["yanked"],
        yanked_at=m["yanked_at"],
        yank_reason=m["yank_reason"],
    )


def _file(row: sa.Row[tuple[object, ...]]) -> FileRecord:
    m = row._mapping  # noqa: SLF001
    return FileRecord(
        package=m["package"],
        version=m["version"],
        path=m["path"],
        size=m["size"],
        sha256=Digest("sha256", bytes(m["sha256"])),
        blake3=Digest("blake3", bytes(m["blake3"])),
        media_type=m["media_type"],
        published_at=m["published_at"],
        yanked=m["yanked"],
    )


async def list_packages(
    conn: AsyncConnection, *, limit: int = 100, cursor: str | None = None
) -> Page[PackageRecord]:
    """Packages by name."""
    query = sa.select(packages).order_by(packages.c.name).limit(_limit(limit) + 1)
    if cursor:
        (last,) = decode_cursor(cursor, 1)
        query = query.where(packages.c.name > last)
    rows = (await conn.execute(query)).all()
    items = tuple(_package(r) for r in rows[:limit])
    more = len(rows) > limit
    return Page(items, encode_cursor(items[-1].name) if more else None)


async def get_package(conn: AsyncConnection, name: str) -> PackageRecord:
    """One package.

    Raises:
        PackageNotFoundError: no package has this name.
    """
    row = (await conn.execute(sa.select(packages).where(packages.c.name == name))).first()
    if row is None:
        raise PackageNotFoundError(f"package {name!r} not found", package=name)
    return _package(row)


async def list_versions(
    conn: AsyncConnection,
    package: str,
    *,
    limit: int = 100,
    cursor: str | None = None,
    include_yanked: bool = True,
) -> Page[VersionRecord]:
    """Versions of a package, by version string.

    Raises:
        PackageNotFoundError: no package has this name.
    """
    await get_package(conn, package)
    pv = package_versions
    query = sa.select(pv).where(pv.c.package == package).order_by(pv.c.version)
    if not include_yanked:
        query = query.where(pv.c.yanked.is_(False))
    if cursor:
        (last,) = decode_cursor(cursor, 1)
        query = query.where(pv.c.version > last)
    rows = (await conn.execute(query.limit(_limit(limit) + 1))).all()
    items = tuple(_version(r) for r in rows[:limit])
    more = len(rows) > limit
    return Page(items, encode_cursor(items[-1].version) if more else None)


async def find_version(conn: AsyncConnection, package: str, version: str) -> VersionRecord | None:
    """One published version (yanked ones too), or None."""
    pv = package_versions
    row = (
        await conn.execute(sa.select(pv).where(pv.c.package == package, pv.c.version == version))
    ).first()
    return None if row is None else _version(row)


async def get_version(conn: AsyncConnection, package: str, version: str) -> VersionRecord:
    """One published version (yanked ones too).

    Raises:
        VersionNotFoundError: the package has no such version.
    """
    found = await find_version(conn, package, version)
    if found is None:
        raise VersionNotFoundError(
            f"{package} {version} not found", package=package, version=version
        )
    return found


async def get_file(conn: AsyncConnection, package: str, version: str, path: str) -> FileRecord:
    """One file of a version.

    Raises:
        VersionNotFoundError: the version does not exist.
        FileNotInVersionError: the version has no file at ``path``.
    """
    pf = package_files
    row = (
        await conn.execute(
            sa.select(pf).where(pf.c.package == package, pf.c.key == f"{version}/{path}")
        )
    ).first()
    if row is None:
        await get_version(conn, package, version)
        raise FileNotInVersionError(
            f"{package} {version} has no file {path!r}",
            package=package,
            version=version,
            path=path,
        )
    return _file(row)


async def list_files(
    conn: AsyncConnection,
    package: str,
    *,
    after_key: str = "",
    prefix: str = "",
    limit: int = 1000,
    include_yanked: bool = True,
) -> list[FileRecord]:
    """Files of a package ordered by key (``<version>/<path>``), after ``after_key``.

    The query walks the ``(package, key)`` primary key index: a page costs
    the same at any table size. A prefix narrows the range on that index.
    """
    pf = package_files
    conditions = [pf.c.package == package]
    if after_key:
        conditions.append(pf.c.key > after_key)
    if prefix:
        # A closed range on the index (keys use the "C" collation: UTF-8 byte
        # order, as S3 lists), then the exact test for the rare key past U+10FFFF.
        conditions += [
            pf.c.key >= prefix,
            pf.c.key < prefix + "\U0010ffff",
            pf.c.key.startswith(prefix, autoescape=True),
        ]
    if not include_yanked:
        conditions.append(pf.c.yanked.is_(False))
    query = sa.select(pf).where(*conditions).order_by(pf.c.key).limit(limit)
    rows = (await conn.execute(query)).all()
    return [_file(r) for r in rows]
