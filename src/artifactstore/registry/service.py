"""The registry's use cases as one Python API: ingest, publish, yank, delete, and look-ups.

No HTTP and no S3 vocabulary here: the REST API, the S3 gateway and the CLI
all call this. Errors are the typed exceptions of ``artifactstore.errors``;
each edge maps them to its own statuses. Every state change is an event
recorded in a ``journal.transaction``, in the same transaction as its views.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Self

from artifactstore.db.engine import autocommit
from artifactstore.digests import BlobDigests, Digest, hash_bytes
from artifactstore.errors import (
    BlobNotFoundError,
    DigestMismatchError,
    SizeMismatchError,
)
from artifactstore.events import BlobStored
from artifactstore.registry import lifecycle, queries
from artifactstore.registry import publish as publishing
from artifactstore.registry.blobstore import BlobStore
from artifactstore.registry.ingest import Expected, Staging, check_expected
from artifactstore.registry.journal import transaction
from artifactstore.resources import AsyncCloseable, shared_pool
from artifactstore.views import LocationState

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Iterable, Sequence
    from pathlib import Path

    from artifactstore.config import Settings
    from artifactstore.db.engine import Database
    from artifactstore.manifest import Manifest
    from artifactstore.registry.records import (
        BlobRecord,
        FileRecord,
        PackageRecord,
        Page,
        PublishResult,
        VersionRecord,
    )
    from artifactstore.storage.spi import ByteRange, ObjectStream

__all__ = ["Registry"]

SYSTEM_ACTOR = "system"
_IN_BATCH = 1000
STALE_STAGING_SECONDS = 24 * 3600
_HASH_INLINE_BYTES = 256 * 1024  # hashed on the event loop below this, in a thread above


class Registry(AsyncCloseable):
    """The registry over one database and one set of storage backends."""

    def __init__(self, settings: Settings, database: Database, store: BlobStore) -> None:
        self.settings = settings
        self.database = database
        self.engine = database.engine
        self.store = store
        self.staging = Staging(settings.staging_dir)

    @classmethod
    async def open(cls, settings: Settings, *, migrate: bool | None = None) -> Self:
        """Open the database (embedded or configured) and every configured backend."""
        from artifactstore.db.engine import open_database  # noqa: PLC0415 - avoids a cycle
        from artifactstore.storage.factory import open_backends  # noqa: PLC0415

        database = await open_database(settings, migrate=migrate)
        try:
            storage = settings.effective_storage
            backends = await open_backends(storage, database_url=database.url)
        except BaseException:
            await database.aclose()
            raise
        registry = cls(settings, database, BlobStore(database.engine, backends, storage))
        registry.staging.sweep(older_than_seconds=STALE_STAGING_SECONDS)
        registry.staging.sweep_dead_owners()
        return registry

    async def aclose(self) -> None:
        """Close the backends and the database, and give up the staging ownership."""
        self.staging.close()
        await self.store.aclose()
        await self.database.aclose()

    # -- blobs ---------------------------------------------------------------

    async def blob(self, sha256: Digest) -> BlobRecord:
        """The blob and its copies.

        Raises:
            BlobNotFoundError: never stored.
        """
        async with autocommit(self.engine) as conn:
            return await queries.get_blob(conn, sha256)

    async def find_blob(self, sha256: Digest) -> BlobRecord | None:
        """The blob if it has at least one readable copy, else None."""
        try:
            found = await self.blob(sha256)
        except BlobNotFoundError:
            return None
        readable = any(loc.state in LocationState.READABLE for loc in found.locations)
        return found if readable else None

    async def open_blob(self, sha256: Digest, byte_range: ByteRange | None = None) -> ObjectStream:
        """Open a streamed read of a blob from its first readable copy.

        Raises:
            BlobNotFoundError, InvalidRangeError, BackendUnavailableError.
        """
        return await self.store.open(sha256, byte_range)

    async def ingest(
        self,
        chunks: AsyncIterable[bytes],
        *,
        expected: Expected | None = None,
        producer: str | None = None,
        retention_class: str | None = None,
        actor: str = SYSTEM_ACTOR,
    ) -> BlobRecord:
        """Store a blob from a stream, checking it against ``expected``.

        Deduplicated: when ``expected.sha256`` names a blob already held on
        every routed backend, the stream is not read. A digest or size
        mismatch stores nothing and records nothing.

        Raises:
            DigestMismatchError, SizeMismatchError, TooLargeError.
        """
        expected = expected or Expected()
        targets = self.store.targets(producer=producer, retention_class=retention_class)
        if expected.sha256 is not None:
            existing = await self.held_on(expected.sha256, targets)
            if existing is not None:
                check_expected(
                    BlobDigests(existing.sha256, existing.blake3, existing.size),
                    Expected(expected.sha256, expected.blake3, expected.size),
                )
                return existing
        path, digests = await self.staging.stage_stream(
            chunks, max_size=self.settings.uploads.max_blob_bytes
        )
        blob, _ = await self.store_staged(
            path, digests, expected=expected, targets=targets, actor=actor
        )
        return blob

    async def ingest_bytes(
        self,
        data: bytes,
        *,
        producer: str | None = None,
        retention_class: str | None = None,
        actor: str = SYSTEM_ACTOR,
    ) -> BlobRecord:
        """Store a small in-memory blob (tests, benchmarks): ``put_small`` without the flag."""
        blob, _ = await self.put_small(
            data, producer=producer, retention_class=retention_class, actor=actor
        )
        return blob

    async def put_small(
        self,
        data: bytes,
        *,
        expected: Expected | None = None,
        producer: str | None = None,
        retention_class: str | None = None,
        actor: str = SYSTEM_ACTOR,
    ) -> tuple[BlobRecord, bool]:
        """Store an in-memory blob in one step; ``(blob, created)``.

        The path of ``POST /v1/blobs`` (DESIGN section 10): no session and no
        staged file. ``created`` is False when every routed backend already
        held a readable copy. A digest that disagrees with ``expected``
        stores nothing and records nothing.

        Raises:
            DigestMismatchError, SizeMismatchError.
        """
        digests = (
            hash_bytes(data)
            if len(data) <= _HASH_INLINE_BYTES
            else await asyncio.to_thread(hash_bytes, data)
        )
        check_expected(digests, expected or Expected())
        targets = self.store.targets(producer=producer, retention_class=retention_class)
        async with autocommit(self.engine) as conn:
            readable = frozenset(await self.store.readable_backends(conn, digests.sha256))
        copies = await publishing.store_small(self, data, digests, targets, readable)
        recorded: list[BlobStored] = []
        if copies:
            async with transaction(self.engine, actor=actor) as tx:
                recorded = await tx.record_copies(copies)
        return await self.blob(digests.sha256), bool(recorded)

    async def held_blobs(
        self,
        wanted: Sequence[Expected],
        *,
        producer: str | None = None,
        retention_class: str | None = None,
    ) -> list[BlobDigests | None]:
        """Each named blob, in order, if held readable on every routed backend; else None."""
        targets = self.store.targets(producer=producer, retention_class=retention_class)
        async with autocommit(self.engine) as conn:
            return await queries.held_blobs(conn, wanted, targets)

    async def find_by_blake3(self, blake3: Digest) -> Digest | None:
        """The sha256 of the blob recorded with this blake3, if any (readable or not)."""
        async with self.engine.connect() as conn:
            return await queries.sha256_of_blake3(conn, blake3)

    async def held_on(self, sha256: Digest, targets: Iterable[str]) -> BlobRecord | None:
        """The blob if it has a readable copy on every one of ``targets``, else None."""
        found = await self.find_blob(sha256)
        if found is None:
            return None
        readable = {loc.backend for loc in found.locations if loc.state in LocationState.READABLE}
        return found if set(targets) <= readable else None

    async def store_staged(
        self,
        path: Path,
        digests: BlobDigests,
        *,
        expected: Expected,
        targets: tuple[str, ...],
        actor: str,
        keep_on_error: bool = False,
    ) -> tuple[BlobRecord, bool]:
        """Move a staged, hashed file into every target backend and record each copy.

        ``created`` is False when every target already held a readable copy:
        then the staged file is removed and nothing is recorded. The two
        halves are ``put_staged`` and ``record_stored``.

        Raises:
            DigestMismatchError, SizeMismatchError: nothing stored, file removed.
        """
        stored = await self.put_staged(
            path, digests, expected=expected, targets=targets, keep_on_error=keep_on_error
        )
        return await self.record_stored(digests.sha256, stored, actor=actor)

    async def put_staged(
        self,
        path: Path,
        digests: BlobDigests,
        *,
        expected: Expected,
        targets: tuple[str, ...],
        keep_on_error: bool = False,
    ) -> list[BlobStored]:
        """Write a staged, hashed file to each target lacking a readable copy; the copies written.

        The staged file is consumed (renamed into the last backend that needs
        it, where the backend allows) or removed, by a background thread
        after success (the answer does not wait for it). Copies that already exist
        are not written again. With ``keep_on_error``, a failure other than a
        mismatch leaves the file (if not yet consumed) for the caller to retry.

        Raises:
            DigestMismatchError, SizeMismatchError: nothing stored, file removed.
        """
        try:
            check_expected(digests, expected)
            sha = digests.sha256
            todo = await self.lacking_copies(sha, targets)
            stored: list[BlobStored] = []
            for i, name in enumerate(todo):
                info = await self.store.backend(name).put_file(
                    sha, path, consume=i == len(todo) - 1
                )
                stored.append(BlobStored.copy_of(digests, name, info.key))
        except (DigestMismatchError, SizeMismatchError):
            path.unlink(missing_ok=True)  # noqa: ASYNC240 - one metadata call
            raise
        except BaseException:
            if not keep_on_error:
                path.unlink(missing_ok=True)  # noqa: ASYNC240
            raise
        # Gone already when a backend took it by rename; otherwise (every target
        # held the blob, or no backend could take the file) dropped in the
        # background: unlinking 1 GiB took 0.13 s here, on the event loop.
        shared_pool("staging-discard", 1).submit(path.unlink, missing_ok=True)
        return stored

    async def lacking_copies(self, sha256: Digest, targets: Iterable[str]) -> list[str]:
        """The targets without a readable copy of the blob (recorded and present)."""
        async with autocommit(self.engine) as conn:
            readable = set(await self.store.readable_backends(conn, sha256))
        return [
            name
            for name in targets
            if name not in readable or await self.store.backend(name).head(sha256) is None
        ]

    async def record_stored(
        self, sha256: Digest, stored: Sequence[BlobStored], *, actor: str
    ) -> tuple[BlobRecord, bool]:
        """Record the copies no readable location records yet; ``(blob, created)``."""
        recorded: list[BlobStored] = []
        if stored:
            async with transaction(self.engine, actor=actor) as tx:
                recorded = await tx.record_copies(stored)
        return await self.blob(sha256), bool(recorded)

    # -- packages ------------------------------------------------------------

    async def publish(
        self,
        manifest: Manifest | bytes,
        *,
        producer: str | None = None,
        retention_class: str | None = None,
        actor: str = SYSTEM_ACTOR,
    ) -> PublishResult:
        """Publish a version from a manifest (canonical CBOR bytes or a ``Manifest``).

        Every referenced blob must exist with the manifest's blake3 and size,
        and gets a copy on every backend the routes name before the version
        becomes visible. The same manifest again is a no-op (``created`` is
        False); a different manifest for an existing version is refused.

        Raises:
            ManifestError: not canonical, invalid, or disagreeing with stored blobs.
            MissingBlobsError: referenced blobs are not held; ``detail["missing"]``.
            VersionConflictError: the version exists with another manifest.
        """
        return await publishing.publish(
            self, manifest, producer=producer, retention_class=retention_class, actor=actor
        )

    async def yank(
        self, package: str, version: str, *, reason: str = "", actor: str = SYSTEM_ACTOR
    ) -> VersionRecord:
        """Yank a version (``lifecycle.yank``; raises ``VersionNotFoundError``)."""
        return await lifecycle.yank(self.engine, package, version, reason=reason, actor=actor)

    async def delete_version(
        self, package: str, version: str, *, reason: str = "", actor: str = SYSTEM_ACTOR
    ) -> VersionRecord:
        """Delete a version for good (``lifecycle.delete_version``); return what it was."""
        return await lifecycle.delete_version(
            self.engine, package, version, reason=reason, actor=actor
        )

    async def delete_package(
        self, package: str, *, reason: str = "", actor: str = SYSTEM_ACTOR
    ) -> list[str]:
        """Delete every version of a package (``lifecycle.delete_package``); return them."""
        return await lifecycle.delete_package(self.engine, package, reason=reason, actor=actor)

    async def package(self, name: str) -> PackageRecord:
        """One package (raises ``PackageNotFoundError``)."""
        async with self.engine.connect() as conn:
            return await queries.get_package(conn, name)

    async def packages(self, *, limit: int = 100, cursor: str | None = None) -> Page[PackageRecord]:
        """Packages by name, one page."""
        async with self.engine.connect() as conn:
            return await queries.list_packages(conn, limit=limit, cursor=cursor)

    async def versions(
        self, package: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[VersionRecord]:
        """Versions of a package, one page (raises ``PackageNotFoundError``)."""
        async with self.engine.connect() as conn:
            return await queries.list_versions(conn, package, limit=limit, cursor=cursor)

    async def version(self, package: str, version: str) -> VersionRecord:
        """One version (raises ``VersionNotFoundError``)."""
        async with self.engine.connect() as conn:
            return await queries.get_version(conn, package, version)

    async def manifest_bytes(self, package: str, version: str) -> bytes:
        """The canonical CBOR manifest of a version, read from storage."""
        record_ = await self.version(package, version)
        stream = await self.open_blob(record_.manifest_sha256)
        return await stream.read_all()

    async def file(self, package: str, version: str, path: str) -> FileRecord:
        """One file of a version (raises ``VersionNotFoundError``/``FileNotInVersionError``)."""
        async with self.engine.connect() as conn:
            return await queries.get_file(conn, package, version, path)

    async def files(
        self,
        package: str,
        *,
        after_key: str = "",
        prefix: str = "",
        limit: int = 1000,
        include_yanked: bool = True,
    ) -> list[FileRecord]:
        """Files of a package by ``<version>/<path>`` key, keyset-paginated."""
        async with self.engine.connect() as conn:
            return await queries.list_files(
                conn,
                package,
                after_key=after_key,
                prefix=prefix,
                limit=limit,
                include_yanked=include_yanked,
            )
