"""Registry services on a real PostgreSQL and a real local backend."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from artifactstore import views
from artifactstore.digests import Digest, hash_bytes
from artifactstore.errors import (
    DigestMismatchError,
    ManifestError,
    MissingBlobsError,
    SizeMismatchError,
    VersionConflictError,
    VersionNotFoundError,
)
from artifactstore.events import verify_chain
from artifactstore.manifest import ManifestFile, build_manifest, encode_manifest
from artifactstore.registry import Expected, Registry, Tokens

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


async def _chunks(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _event_count(registry: Registry) -> int:
    async with registry.engine.connect() as conn:
        return int(await conn.scalar(sa.text("SELECT count(*) FROM events")) or 0)


def _file(path: str, data: bytes) -> ManifestFile:
    d = hash_bytes(data)
    return ManifestFile(path=path, size=d.size, sha256=d.sha256, blake3=d.blake3)


async def test_ingest_stores_both_digests_and_one_event(registry: Registry) -> None:
    """Ingesting a stream records the blob's sha256, blake3 and size and one event."""
    data = random.Random(1).randbytes(300_000)
    blob = await registry.ingest(_chunks(data))
    expected = hash_bytes(data)
    assert (blob.sha256, blob.blake3, blob.size) == (expected.sha256, expected.blake3, len(data))
    assert [loc.backend for loc in blob.locations] == ["local"]
    stream = await registry.open_blob(blob.sha256)
    assert await stream.read_all() == data
    assert await _event_count(registry) == 1


async def test_wrong_expected_digest_stores_nothing(registry: Registry) -> None:
    """A mismatching expected digest raises and leaves no blob, file or event."""
    data = b"hello world" * 1000
    wrong = Digest("sha256", bytes(32))
    with pytest.raises(DigestMismatchError) as caught:
        await registry.ingest(_chunks(data), expected=Expected(sha256=wrong))
    assert caught.value.detail["expected"] == str(wrong)
    assert await _event_count(registry) == 0
    assert await registry.find_blob(hash_bytes(data).sha256) is None
    assert list(registry.staging.root.iterdir()) == []
    backend = registry.store.backend("local")
    assert [o async for o in backend.iter_objects()] == []


async def test_wrong_size_stores_nothing(registry: Registry) -> None:
    """A stream shorter than the declared size is refused without a trace."""
    with pytest.raises(SizeMismatchError):
        await registry.ingest(_chunks(b"abc"), expected=Expected(size=4))
    assert await _event_count(registry) == 0


async def test_known_blob_is_deduplicated_without_reading(registry: Registry) -> None:
    """Ingesting a held blob with its expected sha256 returns it and appends nothing."""
    data = b"x" * 5000
    first = await registry.ingest(_chunks(data))

    async def exploding() -> AsyncIterator[bytes]:
        if first.size:  # always true; keeps this an async generator that raises when read
            msg = "the stream must not be read"
            raise AssertionError(msg)
        yield b""

    again = await registry.ingest(exploding(), expected=Expected(sha256=first.sha256))
    assert again.sha256 == first.sha256
    assert await _event_count(registry) == 1


async def test_publish_then_same_again_then_conflict(registry: Registry) -> None:
    """Publishing is idempotent for the same manifest and refuses a different one."""
    a, b = b"alpha" * 100, b"beta" * 100
    await registry.ingest(_chunks(a))
    await registry.ingest(_chunks(b))
    manifest = build_manifest("demo", "1.0.0", [_file("a.txt", a), _file("dir/b.txt", b)])
    first = await registry.publish(manifest, actor="ci")
    assert first.created
    assert first.manifest_sha256 == hash_bytes(encode_manifest(manifest)).sha256
    again = await registry.publish(encode_manifest(manifest))
    assert not again.created
    assert again.manifest_sha256 == first.manifest_sha256
    other = build_manifest("demo", "1.0.0", [_file("a.txt", a)])
    with pytest.raises(VersionConflictError):
        await registry.publish(other)
    version = await registry.version("demo", "1.0.0")
    assert version.file_count == 2
    assert version.actor == "ci"
    assert await registry.manifest_bytes("demo", "1.0.0") == encode_manifest(manifest)
    f = await registry.file("demo", "1.0.0", "dir/b.txt")
    assert f.sha256 == hash_bytes(b).sha256


async def test_publish_refuses_missing_blobs_and_lists_them(registry: Registry) -> None:
    """A manifest naming blobs the registry lacks is refused with each missing digest."""
    manifest = build_manifest("demo", "1.0.0", [_file("a", b"never uploaded")])
    with pytest.raises(MissingBlobsError) as caught:
        await registry.publish(manifest)
    assert caught.value.detail["missing"] == [str(hash_bytes(b"never uploaded").sha256)]
    with pytest.raises(VersionNotFoundError):
        await registry.version("demo", "1.0.0")


async def test_publish_refuses_a_lying_blake3(registry: Registry) -> None:
    """A manifest whose blake3 disagrees with the stored blob is refused."""
    data = b"payload"
    await registry.ingest(_chunks(data))
    d = hash_bytes(data)
    lying = ManifestFile("f", d.size, d.sha256, hash_bytes(b"other").blake3)
    with pytest.raises(ManifestError):
        await registry.publish(build_manifest("demo", "1.0.0", [lying]))


async def test_yank_is_idempotent_and_recorded_once(registry: Registry) -> None:
    """Yanking marks the version and its files; a second yank appends nothing."""
    await registry.ingest(_chunks(b"f"))
    await registry.publish(build_manifest("demo", "2.0", [_file("f", b"f")]))
    before = await _event_count(registry)
    yanked = await registry.yank("demo", "2.0", reason="broken")
    assert yanked.yanked
    assert yanked.yank_reason == "broken"
    await registry.yank("demo", "2.0")
    assert await _event_count(registry) == before + 1
    assert await registry.files("demo", include_yanked=False) == []
    with pytest.raises(VersionNotFoundError):
        await registry.yank("demo", "9.9")


async def test_replay_rebuilds_identical_views(registry: Registry) -> None:
    """Replaying the whole log into empty views reproduces every view row for row."""
    rng = random.Random(7)
    tokens = Tokens(registry.engine)
    await tokens.create("ci", "write", actor="test")
    contents = [rng.randbytes(rng.randrange(0, 5000)) for _ in range(12)]
    for data in contents:
        await registry.ingest(_chunks(data, 1000))
    for n in range(5):
        chosen = rng.sample(range(len(contents)), 3)
        files = [_file(f"d{n}/f{i}.bin", contents[i]) for i in chosen]
        await registry.publish(
            build_manifest(f"pkg{n % 2}", f"{n}.0", files, {"n": str(n)}),
            producer="ci-main",
            retention_class="short",
        )
    await registry.yank("pkg0", "2.0", reason="x")
    await tokens.revoke("ci", actor="test")
    async with registry.engine.connect() as conn:
        before = await views.snapshot(conn)
    async with registry.engine.begin() as conn:
        applied = await views.replay(conn)
    async with registry.engine.connect() as conn:
        after = await views.snapshot(conn)
        assert (await verify_chain(conn)).count == applied
    assert after == before
    assert len(before["package_versions"]) == 5
    assert len(before["blobs"]) == len({bytes(c) for c in contents}) + 5
