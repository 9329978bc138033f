"""Publishing a version: everything prepared first, then one short journal transaction.

The order keeps the log lock short (``registry.journal``):

1. Outside any transaction: decode or encode the manifest, hash it, and read
   in one autocommit checkout the version (already published?) and every
   referenced blob with its readable copies (one statement per 1,000 blobs).
2. Storage I/O: copies missing on a routed backend are streamed from an
   existing copy (``BlobStore.copy``), the manifest blob is written.
3. Under the lock: the version is looked up again (a concurrent publisher
   may have won), every referenced blob's copies on the routed backends are
   re-checked in one statement (a garbage collector removes a copy only
   under the same lock, so a publish can never reference a blob it just
   lost), the copies written in step 2 are recorded (even when the publish
   then fails: they are good copies), and ``v1.package.published`` is
   appended and folded into the views.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from artifactstore.db.engine import autocommit
from artifactstore.digests import BlobDigests, Digest, hash_bytes
from artifactstore.errors import (
    BlobNotFoundError,
    ManifestError,
    MissingBlobsError,
    VersionConflictError,
    VersionDeletedError,
)
from artifactstore.events import BlobStored, PackagePublished
from artifactstore.manifest import Manifest, decode_manifest, encode_manifest
from artifactstore.names import validate_visible_path
from artifactstore.registry import queries
from artifactstore.registry.journal import transaction
from artifactstore.registry.records import PublishResult
from artifactstore.views import readable_copies

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from artifactstore.events import EventPayload
    from artifactstore.registry.queries import RecordedBlob
    from artifactstore.registry.records import VersionRecord
    from artifactstore.registry.service import Registry

__all__ = ["publish", "store_small"]


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    """``data`` as a stream of one chunk (for ``put_stream``)."""
    yield data


async def publish(
    registry: Registry,
    manifest: Manifest | bytes,
    *,
    producer: str | None,
    retention_class: str | None,
    actor: str,
) -> PublishResult:
    """Publish a version (see ``Registry.publish``)."""
    if isinstance(manifest, bytes):
        parsed, data = decode_manifest(manifest), manifest
    else:
        parsed, data = manifest, encode_manifest(manifest)
    for index, entry in enumerate(parsed.files):
        validate_visible_path(entry.path, field=f"files[{index}].path")
    digests = hash_bytes(data)
    wanted = [f.sha256.raw for f in parsed.files]
    async with autocommit(registry.engine) as conn:
        current = await queries.find_version(conn, parsed.package, parsed.version)
        if current is not None:
            return same_or_conflict(current, parsed, digests.sha256)
        if await queries.is_deleted(conn, parsed.package, parsed.version):
            raise _deleted(parsed)
        held = await queries.recorded_blobs(conn, [*wanted, digests.sha256.raw])
    check_blobs(parsed, held)
    targets = registry.store.targets(producer=producer, retention_class=retention_class)
    copies = await copy_missing(registry, parsed, held, targets)
    manifest_held = held.get(digests.sha256.raw)
    copies += await store_small(
        registry, data, digests, targets, manifest_held.backends if manifest_held else frozenset()
    )
    made = {(c.sha256, c.backend) for c in copies}
    pairs = {(raw, name) for raw in wanted for name in targets}
    async with transaction(registry.engine, actor=actor) as tx:
        current = await queries.find_version(tx.conn, parsed.package, parsed.version)
        deleted = current is None and await queries.is_deleted(
            tx.conn, parsed.package, parsed.version
        )
        still = await readable_copies(tx.conn, list(pairs | made))
        # Copies written above are recorded whatever happens next: they are
        # good copies of known blobs, and unrecorded they would be orphans.
        fresh: list[EventPayload] = [*await tx.fresh_copies(copies, held=still)]
        gone = sorted({raw.hex() for raw, _ in pairs - still - made})
        if current is None and not deleted and not gone:
            fresh.append(
                PackagePublished(
                    package=parsed.package,
                    version=parsed.version,
                    manifest_sha256=digests.sha256.raw,
                    manifest=data,
                    producer=producer,
                    retention_class=retention_class,
                )
            )
        await tx.record(*fresh)
    if current is not None:
        return same_or_conflict(current, parsed, digests.sha256)
    if deleted:
        raise _deleted(parsed)
    if gone:
        raise MissingBlobsError(
            f"{len(gone)} referenced blob(s) lost their copies meanwhile; upload them again",
            missing=[f"sha256:{h}" for h in gone],
        )
    return PublishResult(manifest_sha256=digests.sha256, created=True)


def _deleted(parsed: Manifest) -> VersionDeletedError:
    """A version string always means one manifest, so a deleted one is never reused."""
    return VersionDeletedError(
        f"{parsed.package} {parsed.version} was deleted; a deleted version is never"
        " published again: publish a new version",
        package=parsed.package,
        version=parsed.version,
    )


def same_or_conflict(current: VersionRecord, parsed: Manifest, sha: Digest) -> PublishResult:
    """A no-op result for the same manifest again, else the conflict.

    Raises:
        VersionConflictError: the version exists with another manifest.
    """
    if current.manifest_sha256.matches(sha):
        return PublishResult(manifest_sha256=sha, created=False)
    raise VersionConflictError(
        f"{parsed.package} {parsed.version} is already published with another manifest",
        package=parsed.package,
        version=parsed.version,
        existing_manifest_sha256=current.manifest_sha256.hex,
        manifest_sha256=sha.hex,
    )


def check_blobs(parsed: Manifest, held: Mapping[bytes, RecordedBlob]) -> None:
    """Every file's blob is recorded with the manifest's blake3 and size.

    Raises:
        MissingBlobsError: some are not recorded; ``detail["missing"]`` lists them.
        ManifestError: a file's blake3 or size disagrees with the stored blob.
    """
    missing = sorted({f.sha256.hex for f in parsed.files if f.sha256.raw not in held})
    if missing:
        raise MissingBlobsError(
            f"{len(missing)} referenced blob(s) are not in the registry; upload them first",
            missing=[f"sha256:{h}" for h in missing],
        )
    for f in parsed.files:
        blob = held[f.sha256.raw].digests
        if blob.blake3 != f.blake3 or blob.size != f.size:
            raise ManifestError(
                f"{f.path}: blake3 or size disagrees with the stored blob {f.sha256}",
                path=f.path,
            )


async def copy_missing(
    registry: Registry,
    parsed: Manifest,
    held: Mapping[bytes, RecordedBlob],
    targets: tuple[str, ...],
) -> list[BlobStored]:
    """Copy each file's blob to the routed backends that lack it; the copies made.

    Raises:
        BlobNotFoundError: a blob has no readable copy to copy from.
        DigestMismatchError: the source copy is corrupt (nothing stored).
    """
    made: list[BlobStored] = []
    for raw in dict.fromkeys(f.sha256.raw for f in parsed.files):
        blob = held[raw]
        for target in (t for t in targets if t not in blob.backends):
            sources = sorted(b for b in blob.backends if b in registry.store.backends)
            if not sources:
                sha = blob.digests.sha256
                raise BlobNotFoundError(f"no readable copy of {sha} to copy", sha256=sha.hex)
            info = await registry.store.copy(blob.digests.sha256, blob.digests, sources[0], target)
            made.append(BlobStored.copy_of(blob.digests, target, info.key))
    return made


async def store_small(
    registry: Registry,
    data: bytes,
    digests: BlobDigests,
    targets: tuple[str, ...],
    readable: frozenset[str],
) -> list[BlobStored]:
    """Put in-memory bytes on every target not in ``readable``; the copies to record."""
    stored: list[BlobStored] = []
    for name in targets:
        if name in readable:
            continue
        info = await registry.store.backend(name).put_stream(
            digests.sha256, one_chunk(data), digests.size
        )
        stored.append(BlobStored.copy_of(digests, name, info.key))
    return stored
