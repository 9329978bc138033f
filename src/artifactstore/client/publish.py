"""Upload: collect -> hash -> ensure blobs -> publish (DESIGN sections 5, 6 and 10).

1. Collect the files (``client/files.py``).
2. Hash them with blake3. To a server on this machine whose handoff socket
   is usable, files above ``SMALL_FILE_BYTES`` are not hashed here: the
   bytes never cross a network, so the server hashes what it reads and
   answers with both digests (``client/blobs.py``).
3. If the version is already published, compare the local files with its
   manifest: all equal is a no-op success, any difference a conflict, found
   before a byte is sent.
4. Ensure the server holds every blob (``client/blobs.py``).
5. Build the canonical CBOR manifest (local paths, sizes, the server's
   digests), ``PUT`` it, and check the server names the same manifest digest.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from artifactstore import errors
from artifactstore.client.blobs import SMALL_FILE_BYTES, Blob, BlobUploader, send_all
from artifactstore.client.files import blake3_file, collect_files, media_type_for
from artifactstore.client.handoff import handoff_for
from artifactstore.client.progress import Meter
from artifactstore.client.sessions import HandoffSender, HttpSender
from artifactstore.client.transport import version_path
from artifactstore.digests import Digest
from artifactstore.manifest import (
    Manifest,
    ManifestFile,
    build_manifest,
    decode_manifest,
    encode_manifest,
)
from artifactstore.models import BlobInfo, PublishInfo
from artifactstore.names import validate_package_name, validate_version

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from artifactstore.client.files import SourceFile
    from artifactstore.client.progress import ProgressCallback
    from artifactstore.client.session_cache import SessionCache
    from artifactstore.client.sessions import BodySender
    from artifactstore.client.transport import Transport

__all__ = ["UploadOptions", "UploadResult", "upload_version"]

log = logging.getLogger("artifactstore.client")

CBOR = "application/cbor"


@dataclass(frozen=True, slots=True)
class UploadOptions:
    """How to upload; the defaults suit most programs."""

    concurrency: int = 4
    chunk_size: int = 256 * 1024 * 1024
    """Bytes per ``PATCH``: each ends with the server's fsync, a pipeline bubble."""
    handoff: bool = True
    """Hand files to a server on this machine instead of sending their bytes."""


@dataclass(frozen=True, slots=True)
class UploadResult:
    """What an upload did."""

    package: str
    version: str
    manifest_sha256: Digest
    created: bool
    """False when the same content was already published (a no-op)."""
    files: int
    uploaded: int
    """Distinct blobs this call stored."""
    skipped: int
    bytes_uploaded: int

    def to_json(self) -> dict[str, Any]:
        """The CLI's ``--json`` summary."""
        return {
            "package": self.package,
            "version": self.version,
            "manifest_sha256": str(self.manifest_sha256),
            "created": self.created,
            "files": self.files,
            "uploaded": self.uploaded,
            "skipped": self.skipped,
            "bytes_uploaded": self.bytes_uploaded,
        }


def _conflict(package: str, version: str, **detail: Any) -> errors.VersionConflictError:
    return errors.VersionConflictError(
        f"{package} {version} is already published with different content;"
        " a published version never changes: publish a new version",
        **detail,
    )


async def _hash(files: Sequence[SourceFile], concurrency: int, meter: Meter) -> list[Digest]:
    gate = asyncio.Semaphore(max(1, min(concurrency, os.cpu_count() or 1)))

    async def one(item: SourceFile) -> Digest:
        async with gate:
            return await asyncio.to_thread(blake3_file, item, meter.advance)

    return list(await asyncio.gather(*(one(f) for f in files)))


async def _published(transport: Transport, path: str) -> tuple[Manifest, Digest] | None:
    try:
        response = await transport.request("GET", path, headers={"Accept": CBOR})
    except errors.NotFoundError:
        return None
    digest = Digest("sha256", hashlib.sha256(response.content).digest())
    return decode_manifest(response.content), digest


def _manifest(
    package: str,
    version: str,
    files: Sequence[SourceFile],
    blobs: Sequence[Blob],
    annotations: Mapping[str, str],
) -> tuple[bytes, Digest]:
    entries = []
    for item, blob in zip(files, blobs, strict=True):
        if blob.info is None:  # pragma: no cover - every blob was sent or found first
            raise errors.ArtifactStoreError(f"{item.path}: the server's digests are unknown")
        info = blob.info
        entries.append(
            ManifestFile(item.path, item.size, info.sha256, info.blake3, media_type_for(item.path))
        )
    body = encode_manifest(build_manifest(package, version, entries, dict(annotations)))
    return body, Digest("sha256", hashlib.sha256(body).digest())


def _blobs(files: Sequence[SourceFile], hashes: Mapping[str, Digest]) -> list[Blob]:
    """One ``Blob`` per file; files with the same hashed content share one."""
    by_content: dict[str, Blob] = {}
    result = []
    for item in files:
        digest = hashes.get(item.path)
        if digest is None:
            result.append(Blob(item.size, [item]))
            continue
        blob = by_content.setdefault(digest.hex, Blob(item.size, [], digest))
        blob.files.append(item)
        result.append(blob)
    return result


async def upload_version(
    transport: Transport,
    package: str,
    version: str,
    paths: Sequence[Path],
    *,
    labels: dict[str, str],
    annotations: Mapping[str, str],
    options: UploadOptions,
    progress: ProgressCallback | None,
    cache: SessionCache,
) -> UploadResult:
    """Upload ``paths`` as ``package`` ``version`` (see the module docstring)."""
    validate_package_name(package)
    validate_version(version)
    files = await asyncio.to_thread(collect_files, paths, log.warning)
    path = version_path(package, version)
    published = await _published(transport, path)
    handoff = await handoff_for(transport) if options.handoff and published is None else None
    to_hash = [f for f in files if handoff is None or f.size <= SMALL_FILE_BYTES]
    meter = Meter("hashing", sum(f.size for f in to_hash), progress)
    digests = await _hash(to_hash, options.concurrency, meter)
    blobs = _blobs(files, {f.path: d for f, d in zip(to_hash, digests, strict=True)})
    distinct = list({id(b): b for b in blobs}.values())
    if published is not None:
        manifest, existing = published
        known = {(f.blake3.raw, f.size): f for f in manifest.files}
        for blob in distinct:
            entry = known.get((blob.blake3.raw if blob.blake3 else b"", blob.size))
            if entry is None:
                raise _conflict(package, version, published=str(existing))
            blob.info = BlobInfo(entry.sha256, entry.blake3, entry.size)
        _, local = _manifest(package, version, files, blobs, annotations)
        if local != existing:
            raise _conflict(package, version, published=str(existing), local=str(local))
    http: BodySender = HttpSender(transport)
    uploader = BlobUploader(
        transport,
        HandoffSender(handoff, http) if handoff is not None else http,
        cache,
        Meter("uploading", 0, progress),
        labels=labels,
        chunk_size=options.chunk_size,
        handoff=handoff,
    )
    if published is None:
        await uploader.learn_held(distinct)
    uploader.meter.total = sum(b.size for b in distinct if b.info is None)
    await send_all(uploader, distinct, options.concurrency)
    body, digest = _manifest(package, version, files, blobs, annotations)
    answer = await _publish(transport, path, body, labels, package, version)
    if answer.manifest_sha256 != digest:
        raise errors.DigestMismatchError(
            f"the server recorded manifest {answer.manifest_sha256}, this client computed {digest}",
            expected=str(digest),
            actual=str(answer.manifest_sha256),
        )
    return UploadResult(
        package=package,
        version=version,
        manifest_sha256=digest,
        created=answer.created,
        files=len(files),
        uploaded=len(uploader.totals.stored),
        skipped=len(files) - len(uploader.totals.stored),
        bytes_uploaded=uploader.totals.bytes,
    )


async def _publish(  # noqa: PLR0917 - one call site, every argument named there
    transport: Transport, path: str, body: bytes, labels: dict[str, str], package: str, version: str
) -> PublishInfo:
    async def put(_attempt: int) -> PublishInfo:
        response = await transport.request(
            "PUT", path, content=body, params=labels, headers={"Content-Type": CBOR}
        )
        return PublishInfo.from_json(response.json())

    try:
        return await transport.retrying("publish", put)
    except errors.VersionConflictError as exc:
        raise _conflict(package, version, **exc.detail) from exc
