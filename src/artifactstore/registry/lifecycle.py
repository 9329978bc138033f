"""A version's life after publish: yank, delete one version, delete a package.

Each is one journal transaction whose re-check of the version's state is
atomic with the append (the log lock is held until COMMIT), so two deletes
of one version record one event and a publish cannot slip in between.
A delete removes the version from every view at once; its blobs stay
(garbage collection removes them later) and its name stays taken
(``deleted_versions``; publish refuses it with ``version_deleted``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from artifactstore.events import PackageDeleted, PackageYanked
from artifactstore.registry import queries
from artifactstore.registry.journal import transaction

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from artifactstore.registry.records import VersionRecord

__all__ = ["delete_package", "delete_version", "yank"]


async def yank(
    engine: AsyncEngine, package: str, version: str, *, reason: str, actor: str
) -> VersionRecord:
    """Yank a version: hidden from listings, still readable by exact name. Idempotent.

    Raises:
        VersionNotFoundError: no such version.
    """
    async with transaction(engine, actor=actor) as tx:
        current = await queries.get_version(tx.conn, package, version)
        if not current.yanked:
            await tx.record(PackageYanked(package=package, version=version, reason=reason))
        return await queries.get_version(tx.conn, package, version)


async def delete_version(
    engine: AsyncEngine, package: str, version: str, *, reason: str, actor: str
) -> VersionRecord:
    """Delete a version; return what it was.

    Raises:
        VersionNotFoundError: no such version, or it is already deleted.
    """
    async with transaction(engine, actor=actor) as tx:
        current = await queries.get_version(tx.conn, package, version)
        await tx.record(
            PackageDeleted(
                package=package,
                version=version,
                manifest_sha256=current.manifest_sha256.raw,
                reason=reason,
            )
        )
        return current


async def delete_package(
    engine: AsyncEngine, package: str, *, reason: str, actor: str
) -> list[str]:
    """Delete every version of a package in one transaction; return their names.

    The package itself stays (with no versions), as does every name deleted.

    Raises:
        PackageNotFoundError: no such package.
    """
    async with transaction(engine, actor=actor) as tx:
        live = await queries.live_versions(tx.conn, package)
        await tx.record(
            *(
                PackageDeleted(package=package, version=v, manifest_sha256=sha.raw, reason=reason)
                for v, sha in live
            )
        )
        return [v for v, _ in live]
