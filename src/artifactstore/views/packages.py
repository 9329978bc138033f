"""Package views: packages, their versions, and the files of each version.

Consumes ``v1.package.published`` (whose payload carries the canonical
manifest, so the views need nothing but the log) and ``v1.package.yanked``.
``package_files`` is keyed by ``(package, "<version>/<path>")``: the S3
gateway's listing order, served from the primary key index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from artifactstore.db.tables import package_files, package_versions, packages
from artifactstore.events.payloads import PackagePublished, PackageYanked
from artifactstore.manifest import decode_manifest

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from artifactstore.events.log import Event

__all__ = ["apply_package_event"]

_FILE_BATCH = 5000


async def apply_package_event(
    conn: AsyncConnection, event: Event, data: PackagePublished | PackageYanked
) -> None:
    """Fold one package event into the views."""
    at = event.occurred_at
    if isinstance(data, PackageYanked):
        await conn.execute(
            sa.update(package_versions)
            .where(
                package_versions.c.package == data.package,
                package_versions.c.version == data.version,
            )
            .values(yanked=True, yanked_at=at, yank_reason=data.reason)
        )
        await conn.execute(
            sa.update(package_files)
            .where(
                package_files.c.package == data.package,
                package_files.c.version == data.version,
            )
            .values(yanked=True)
        )
        return
    manifest = decode_manifest(data.manifest)
    stmt = insert(packages).values(
        name=data.package, created_at=at, created_seq=event.seq, updated_at=at, version_count=1
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={"updated_at": at, "version_count": packages.c.version_count + 1},
        )
    )
    await conn.execute(
        package_versions.insert().values(
            package=data.package,
            version=data.version,
            manifest_sha256=data.manifest_sha256,
            published_at=at,
            published_seq=event.seq,
            actor=event.actor,
            producer=data.producer,
            retention_class=data.retention_class,
            file_count=len(manifest.files),
            total_size=sum(f.size for f in manifest.files),
        )
    )
    rows = [
        {
            "package": data.package,
            "key": f"{data.version}/{f.path}",
            "version": data.version,
            "path": f.path,
            "size": f.size,
            "sha256": f.sha256.raw,
            "blake3": f.blake3.raw,
            "media_type": f.media_type,
            "published_at": at,
        }
        for f in manifest.files
    ]
    for start in range(0, len(rows), _FILE_BATCH):
        await conn.execute(package_files.insert(), rows[start : start + _FILE_BATCH])
