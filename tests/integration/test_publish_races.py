"""Publishes racing each other and a copy's removal, each order forced through the real code."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from artifactstore.digests import hash_bytes
from artifactstore.errors import MissingBlobsError, VersionConflictError, VersionNotFoundError
from artifactstore.events import BlobStored, LocationDeleted
from artifactstore.manifest import ManifestFile, build_manifest
from artifactstore.registry import Registry
from artifactstore.registry import publish as publishing
from artifactstore.registry.journal import transaction

if TYPE_CHECKING:
    from artifactstore.config import Settings
    from artifactstore.digests import BlobDigests

FILE = b"referenced by the version\n" * 64


def _file(data: bytes, path: str = "f.bin") -> ManifestFile:
    d = hash_bytes(data)
    return ManifestFile(path=path, size=d.size, sha256=d.sha256, blake3=d.blake3)


async def _count(registry: Registry, event_type: str) -> int:
    async with registry.engine.connect() as conn:
        value = await conn.scalar(
            sa.text("SELECT count(*) FROM events WHERE type = :t"), {"t": event_type}
        )
    return int(value or 0)


async def test_two_registries_publishing_one_version_at_once_record_it_once(
    settings: Settings,
) -> None:
    """Both pass the stale pre-check; under the lock one records it, the other sees it (200)."""
    registries = [await Registry.open(settings) for _ in range(3)]
    try:
        await registries[0].put_small(FILE)
        manifest = build_manifest("race", "1.0", [_file(FILE)])
        results = await asyncio.gather(*(r.publish(manifest) for r in registries for _ in range(2)))
        other = build_manifest("race", "1.0", [_file(FILE), _file(b"x", "g.bin")])
        with pytest.raises(VersionConflictError):
            await registries[1].publish(other)
        assert sorted(r.created for r in results) == [False] * 5 + [True]
        assert await _count(registries[0], "v1.package.published") == 1
    finally:
        for r in registries:
            await r.aclose()


async def test_a_copy_removed_between_the_check_and_the_lock_fails_the_publish(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A removal committed after the publish's reads but before its lock gives 422, no version."""
    await registry.put_small(FILE)
    sha = hash_bytes(FILE).sha256
    store_small = publishing.store_small

    async def remove_then_store(
        registry_: Registry,
        data: bytes,
        digests: BlobDigests,
        targets: tuple[str, ...],
        readable: frozenset[str],
    ) -> list[BlobStored]:
        # Runs after the publish read the blob as held and before it locks:
        # a collector's removal lands exactly there.
        async with transaction(registry_.engine, actor="collector") as tx:
            await tx.record(LocationDeleted(sha256=sha.raw, backend="local"))
        return await store_small(registry_, data, digests, targets, readable)

    monkeypatch.setattr(publishing, "store_small", remove_then_store)
    with pytest.raises(MissingBlobsError) as caught:
        await registry.publish(build_manifest("race", "2.0", [_file(FILE)]))
    assert caught.value.detail["missing"] == [str(sha)]
    with pytest.raises(VersionNotFoundError):
        await registry.version("race", "2.0")
    assert await _count(registry, "v1.package.published") == 0
    # The manifest's own copy was written before the lock: recorded, not orphaned.
    assert await _count(registry, "v1.blob.stored") == 2
