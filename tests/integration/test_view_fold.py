"""The batch fold against a real PostgreSQL: several events on one key in one batch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from artifactstore import views
from artifactstore.db.tables import (
    VIEW_TABLES,
    api_tokens,
    deleted_versions,
    package_files,
    package_versions,
    packages,
    storage_locations,
)
from artifactstore.digests import hash_bytes
from artifactstore.events import (
    BlobStored,
    EventPayload,
    LocationFailed,
    LocationVerified,
    PackageDeleted,
    PackagePublished,
    PackageYanked,
    TokenCreated,
    TokenRevoked,
)
from artifactstore.manifest import ManifestFile, build_manifest, encode_manifest
from artifactstore.registry.journal import transaction

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

SHA = b"\x01" * 32


def _stored(backend: str = "local", key: str = "k1", sha: bytes = SHA) -> BlobStored:
    return BlobStored(sha256=sha, blake3=b"\x02" * 32, size=5, backend=backend, key=key)


def _published(package: str, version: str, paths: tuple[str, ...] = ("a", "b")) -> PackagePublished:
    files = []
    for path in paths:
        d = hash_bytes(path.encode())
        files.append(ManifestFile(path=path, size=d.size, sha256=d.sha256, blake3=d.blake3))
    manifest = encode_manifest(build_manifest(package, version, files, {}))
    return PackagePublished(package, version, hash_bytes(manifest).sha256.raw, manifest)


async def _record(engine: AsyncEngine, *payloads: EventPayload) -> None:
    """One journal transaction: its events are folded as one batch."""
    async with transaction(engine, actor="test") as tx:
        await tx.record(*payloads)


async def _replayed(engine: AsyncEngine, batch: int) -> dict[str, list[tuple[Any, ...]]]:
    """The views a replay in batches of ``batch`` events gives (rolled back)."""
    async with engine.connect() as conn, conn.begin() as tx:
        for table in VIEW_TABLES:
            await conn.execute(sa.delete(table))
        await views.fold_log(conn, {}, after=0, batch=batch)
        result = await views.snapshot(conn)
        await tx.rollback()
    return result


async def _assert_same_as_one_by_one(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        live = await views.snapshot(conn)
    assert live == await _replayed(engine, 1)
    assert live == await _replayed(engine, 10_000)


async def _location(engine: AsyncEngine, backend: str = "local") -> sa.Row[Any]:
    async with engine.connect() as conn:
        query = sa.select(storage_locations).where(storage_locations.c.backend == backend)
        return (await conn.execute(query)).one()


async def test_stored_again_keeps_verified_at(engine: AsyncEngine) -> None:
    """A blob stored again on a verified copy is ``stored`` with the old ``verified_at``."""
    await _record(engine, _stored())
    await _record(engine, LocationVerified(SHA, "local"))
    verified_at = (await _location(engine)).verified_at
    assert verified_at is not None
    await _record(engine, _stored(key="k2"), LocationFailed(SHA, "local", "bad"), _stored(key="k3"))
    row = await _location(engine)
    assert (row.state, row.key, row.detail, row.verified_at) == ("stored", "k3", "", verified_at)
    await _assert_same_as_one_by_one(engine)


async def test_one_key_many_times_in_one_batch(engine: AsyncEngine) -> None:
    """Stored, verified, failed and stored again in one batch end as event-by-event folding."""
    await _record(
        engine,
        LocationVerified(SHA, "local"),  # no copy yet: changes nothing
        _stored(),
        LocationVerified(SHA, "local"),
        LocationFailed(SHA, "local", "checksum"),
        _stored(key="k2"),
        _stored(backend="other", key="o1"),
    )
    row = await _location(engine)
    assert (row.state, row.key, row.detail) == ("stored", "k2", "")
    assert row.verified_at is not None
    assert row.updated_seq == 5
    other = await _location(engine, "other")
    assert (other.state, other.verified_at) == ("stored", None)
    async with engine.connect() as conn:
        blob = (await conn.execute(sa.text("SELECT stored_seq FROM blobs"))).one()
    assert blob.stored_seq == 2  # the first stored event of the sha256 wins
    await _assert_same_as_one_by_one(engine)


async def test_verified_before_first_store_in_batch_updates_existing_copy(
    engine: AsyncEngine,
) -> None:
    """An update that precedes the batch's store applies to the copy that existed before."""
    await _record(engine, _stored())
    await _record(engine, LocationVerified(SHA, "local"), _stored(key="k2"))
    row = await _location(engine)
    assert (row.state, row.key) == ("stored", "k2")
    assert row.verified_at is not None
    await _assert_same_as_one_by_one(engine)


async def test_publish_then_yank_in_one_batch(engine: AsyncEngine) -> None:
    """A version published and yanked in one batch is yanked with all its files."""
    await _record(engine, _published("p", "0"))
    await _record(
        engine,
        PackageYanked("p", "9", "never published"),
        _published("p", "1"),
        PackageYanked("p", "1", "first"),
        PackageYanked("p", "1", "second"),
        PackageYanked("p", "0", "old"),
        _published("q", "1"),
    )
    async with engine.connect() as conn:
        versions = (
            await conn.execute(
                sa.text(
                    "SELECT package, version, yanked, yank_reason"
                    " FROM package_versions ORDER BY 1, 2"
                )
            )
        ).all()
        files = (
            await conn.execute(
                sa.select(package_files.c.key, package_files.c.yanked)
                .where(package_files.c.package == "p")
                .order_by(package_files.c.key)
            )
        ).all()
        counts = (
            await conn.execute(sa.text("SELECT name, version_count FROM packages ORDER BY 1"))
        ).all()
    assert [tuple(v) for v in versions] == [
        ("p", "0", True, "old"),
        ("p", "1", True, "second"),
        ("q", "1", False, None),
    ]
    assert [tuple(f) for f in files] == [("0/a", True), ("0/b", True), ("1/a", True), ("1/b", True)]
    assert [tuple(c) for c in counts] == [("p", 2), ("q", 1)]
    await _assert_same_as_one_by_one(engine)


async def test_version_published_twice_in_one_batch_fails(engine: AsyncEngine) -> None:
    """Two publishes of one version in one batch fail like the second INSERT did."""
    with pytest.raises(IntegrityError):
        await _record(engine, _published("p", "1"), _published("p", "1", ("c",)))


async def test_tokens_created_and_revoked_in_batches(engine: AsyncEngine) -> None:
    """Revoking in the creating batch, in a later one, or an unknown name, folds as one by one."""
    await _record(engine, TokenCreated("old", "read", b"\x03" * 32))
    await _record(
        engine,
        TokenRevoked("ghost"),
        TokenCreated("new", "write", b"\x04" * 32),
        TokenRevoked("new"),
        TokenRevoked("old"),
        TokenCreated("kept", "admin", b"\x05" * 32),
    )
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(api_tokens.c.name, api_tokens.c.revoked).order_by(api_tokens.c.name)
            )
        ).all()
        positions: dict[str, int] = dict(
            (await conn.execute(sa.text("SELECT * FROM view_positions"))).all()
        )
    assert [tuple(r) for r in rows] == [("kept", False), ("new", True), ("old", True)]
    assert positions == {"tokens": 6}
    await _assert_same_as_one_by_one(engine)


def _deleted(published: PackagePublished, reason: str = "") -> PackageDeleted:
    return PackageDeleted(
        published.package, published.version, published.manifest_sha256, reason=reason
    )


async def test_delete_in_the_publishing_batch_and_after(engine: AsyncEngine) -> None:
    """Deletes drop a version's rows (published, yanked, in its own batch or later) and stay."""
    one, two, three = _published("p", "1"), _published("p", "2"), _published("p", "3")
    await _record(engine, one)
    await _record(engine, two, PackageYanked("p", "2"), _deleted(two, "same batch"), three)
    await _record(engine, PackageYanked("p", "1"), _deleted(one, "later"))
    async with engine.connect() as conn:
        versions = (await conn.execute(sa.select(package_versions.c.version))).scalars().all()
        files = (await conn.execute(sa.select(package_files.c.key))).scalars().all()
        count = (await conn.execute(sa.select(packages.c.version_count))).scalar_one()
        gone = (
            await conn.execute(
                sa.select(deleted_versions.c.version, deleted_versions.c.reason).order_by(
                    deleted_versions.c.version
                )
            )
        ).all()
    assert versions == ["3"]
    assert sorted(files) == ["3/a", "3/b"]
    assert count == 1
    assert [tuple(r) for r in gone] == [("1", "later"), ("2", "same batch")]
    await _assert_same_as_one_by_one(engine)
