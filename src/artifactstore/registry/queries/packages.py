"""Read-side look-ups over the package views: ``packages``, ``package_versions``, ``package_files``.

Owns every read of those three tables: packages by name, versions of a
package, one version (``find_version`` answers None, ``get_version`` raises),
files of a version or of a package by key (the S3 gateway's listings).
Lists are keyset-paginated with ``paging`` cursors. Absent things raise the
``NotFoundError`` family; nothing here writes. Blobs and their copies are
``queries.blobs``; the write side of these tables is ``views/packages.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from artifactstore.db.tables import deleted_versions, package_files, package_versions, packages
from artifactstore.digests import Digest
from artifactstore.errors import (
    FileNotInVersionError,
    PackageNotFoundError,
    VersionNotFoundError,
)
from artifactstore.registry.queries.paging import check_limit, decode_cursor, encode_cursor
from artifactstore.registry.records import FileRecord, PackageRecord, Page, VersionRecord

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = [
    "find_version",
    "get_file",
    "get_package",
    "get_version",
    "is_deleted",
    "last_deletion",
    "list_files",
    "list_packages",
    "list_versions",
    "live_versions",
]


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
    query = sa.select(packages).order_by(packages.c.name).limit(check_limit(limit) + 1)
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
    rows = (await conn.execute(query.limit(check_limit(limit) + 1))).all()
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


async def is_deleted(conn: AsyncConnection, package: str, version: str) -> bool:
    """Whether the version was deleted (its name is never published again)."""
    dv = deleted_versions
    query = sa.select(sa.literal(1)).where(dv.c.package == package, dv.c.version == version)
    return (await conn.execute(query)).first() is not None


async def last_deletion(conn: AsyncConnection) -> int:
    """The seq of the newest ``v1.package.deleted`` folded (0 when none): caches start there."""
    query = sa.select(sa.func.coalesce(sa.func.max(deleted_versions.c.deleted_seq), 0))
    return int((await conn.execute(query)).scalar_one())


async def live_versions(conn: AsyncConnection, package: str) -> list[tuple[str, Digest]]:
    """Every version of a package with its manifest's sha256 (raises ``PackageNotFoundError``)."""
    await get_package(conn, package)
    pv = package_versions
    query = (
        sa.select(pv.c.version, pv.c.manifest_sha256)
        .where(pv.c.package == package)
        .order_by(pv.c.version)
    )
    rows = (await conn.execute(query)).all()
    return [(r.version, Digest("sha256", bytes(r.manifest_sha256))) for r in rows]


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
