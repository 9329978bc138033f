"""Bucket and object look-ups for the gateway, with a bounded cache of what cannot change.

Owns: mapping a bucket name to a package and an object key
(``<version>/<path>``) to a ``FileRecord``, answering ``NoSuchBucket`` and
``NoSuchKey`` the way S3 does, and caching positive answers. It does not
list (``gateway/listing.py``) or read bytes.

Why caching is safe: a published version is immutable (DESIGN section 1)
and packages are never deleted, so a file's sha256, size, media type and
publish time never change once seen. Yanking flips only ``yanked``, which
reads by exact key ignore. Deleting a version takes its files away: the
file cache is dropped whenever ``DeletionWatch`` reports a deletion from
any replica, and not used while it cannot listen. Negative answers are
never cached: a key may be published a moment later. The cache is a plain
LRU bounded by entry count.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from artifactstore.errors import BackendUnavailableError, NotFoundError, PackageNotFoundError
from artifactstore.gateway.deletions import DeletionWatch
from artifactstore.gateway.errors import S3Error

if TYPE_CHECKING:
    from artifactstore.digests import Digest
    from artifactstore.registry import Registry
    from artifactstore.registry.records import FileRecord
    from artifactstore.storage.spi import ByteRange, ObjectStream

__all__ = ["DEFAULT_CACHE_ENTRIES", "LOCATION_TTL_SECONDS", "Catalog"]

DEFAULT_CACHE_ENTRIES = 65536
LOCATION_TTL_SECONDS = 5.0


def _text_ok(value: str) -> bool:
    """PostgreSQL text holds no NUL and only valid UTF-8; anything else cannot exist."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Catalog:
    """Cached look-ups of packages (buckets) and files (objects) in one registry."""

    def __init__(self, registry: Registry, *, max_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        self.registry = registry
        self._max = max_entries
        self._files: OrderedDict[tuple[str, str], FileRecord] = OrderedDict()
        self._buckets: set[str] = set()
        self._locations: OrderedDict[bytes, tuple[float, tuple[str, ...]]] = OrderedDict()
        self.deletions = DeletionWatch(registry.engine)

    async def aclose(self) -> None:
        """Stop watching for deletions."""
        await self.deletions.stop()

    async def require_bucket(self, bucket: str) -> None:
        """Succeed if the package exists.

        Raises:
            S3Error: ``NoSuchBucket``.
        """
        if bucket in self._buckets:
            return
        missing = S3Error("NoSuchBucket", resource=f"/{bucket}", extra={"BucketName": bucket})
        if not _text_ok(bucket):
            raise missing
        try:
            await self.registry.package(bucket)
        except PackageNotFoundError:
            raise missing from None
        if len(self._buckets) < self._max:
            self._buckets.add(bucket)

    async def file(self, bucket: str, key: str) -> FileRecord:
        """The file an object key names (yanked versions too).

        Raises:
            S3Error: ``NoSuchBucket`` if the package is unknown, else ``NoSuchKey``.
        """
        trusted = await self.deletions.changed()
        if trusted is not False:
            self._files.clear()
        cached = self._files.get((bucket, key))
        if cached is not None:
            self._files.move_to_end((bucket, key))
            return cached
        missing = S3Error("NoSuchKey", resource=f"/{bucket}/{key}", extra={"Key": key})
        version, sep, path = key.partition("/")
        if not (sep and version and path and _text_ok(bucket) and _text_ok(key)):
            await self.require_bucket(bucket)
            raise missing
        try:
            found = await self.registry.file(bucket, version, path)
        except NotFoundError:
            await self.require_bucket(bucket)
            raise missing from None
        if trusted is not None:
            self._files[(bucket, key)] = found
        if len(self._files) > self._max:
            self._files.popitem(last=False)
        return found

    async def open_blob(self, sha256: Digest, byte_range: ByteRange | None) -> ObjectStream:
        """Open a blob's bytes, from a recently seen readable copy when there is one.

        Raises:
            BlobNotFoundError, InvalidRangeError, BackendUnavailableError: as
                ``Registry.open_blob``, which answers whenever the remembered
                copies are stale or absent.
        """
        store = self.registry.store
        now = time.monotonic()
        seen = self._locations.get(sha256.raw)
        if seen is not None and seen[0] > now:
            for name in seen[1]:
                backend = store.backends.get(name)
                if backend is None:
                    continue
                try:
                    return await backend.get(sha256, byte_range)
                except (NotFoundError, BackendUnavailableError):
                    break
            self._locations.pop(sha256.raw, None)
        async with self.registry.engine.connect() as conn:
            names = tuple(await store.readable_backends(conn, sha256))
        if names:
            self._locations[sha256.raw] = (now + LOCATION_TTL_SECONDS, names)
            if len(self._locations) > self._max:
                self._locations.popitem(last=False)
        return await self.registry.open_blob(sha256, byte_range)
