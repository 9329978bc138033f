"""Resumable upload sessions (DESIGN section 5; modelled on OCI chunked upload and tus).

A session is a row in ``upload_sessions`` (``registry.session_rows``) plus its
staged bytes, in one of two places chosen when it opens (docs/design/0007):

* ``local`` (``registry.local_sessions``): a file in this server's staging
  dir, renamed into a local backend at finalize - the single-machine fast
  path, used with the embedded database or a ``local`` target;
* ``database`` (``registry.shared_sessions``): pieces in PostgreSQL, so
  every call of the session may reach any replica behind a load balancer -
  used with an external database when every target is shared (S3,
  ``postgres``).

Either way a chunk is acknowledged only once durable, the offset HEAD gives
is the resume point after any crash, and a finalize that claimed the bytes
is completed by a retried PUT (docs/design/0006).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from artifactstore.digests import DualHasher
from artifactstore.errors import (
    ConflictError,
    InvalidInputError,
    TooLargeError,
)
from artifactstore.registry import session_rows
from artifactstore.registry.local_sessions import ORPHAN_GRACE_SECONDS, LocalSessions
from artifactstore.registry.shared_sessions import DATABASE, LOCAL, SharedSessions

if TYPE_CHECKING:
    from collections.abc import AsyncIterable
    from pathlib import Path

    from artifactstore.digests import Digest
    from artifactstore.registry.records import BlobRecord
    from artifactstore.registry.service import Registry

__all__ = ["ORPHAN_GRACE_SECONDS", "UploadSession", "Uploads"]


@dataclass(frozen=True, slots=True)
class UploadSession:
    """A session's public state."""

    id: uuid.UUID
    offset: int
    created_at: datetime
    expires_at: datetime
    declared_size: int | None


class Uploads:
    """Upload sessions over a registry's database and staging places."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.engine = registry.engine
        self.limits = registry.settings.uploads
        self.staging = registry.staging
        hashers: dict[uuid.UUID, DualHasher] = {}  # this replica's in-order hashers
        self._hashers = hashers
        self.local = LocalSessions(registry, hashers)
        self.shared = SharedSessions(registry, hashers)
        self.claims = self.local.claims

    def path(self, session_id: uuid.UUID) -> Path:
        """The staged file of a locally staged session."""
        return self.local.path(session_id)

    async def create(
        self,
        *,
        size: int | None = None,
        sha256: Digest | None = None,
        blake3: Digest | None = None,
        producer: str | None = None,
        retention_class: str | None = None,
        actor: str,
    ) -> UploadSession | BlobRecord:
        """Open a session, or return the blob when the digests name one already held.

        Either digest may name the blob (the CLI sends blake3 alone); when both
        are given both must agree with the stored blob, else a session opens
        and finalize judges the bytes.

        Raises:
            TooLargeError: ``size`` exceeds the configured maximum blob size.
            InvalidInputError: a negative size.
        """
        if size is not None:
            if size < 0:
                raise InvalidInputError("size cannot be negative", size=size)
            if size > self.limits.max_blob_bytes:
                raise TooLargeError(
                    f"size {size} exceeds the maximum blob size {self.limits.max_blob_bytes}",
                    limit=self.limits.max_blob_bytes,
                )
        targets = self.registry.store.targets(producer=producer, retention_class=retention_class)
        known = sha256
        if known is None and blake3 is not None:
            known = await self.registry.find_by_blake3(blake3)
        if known is not None:
            existing = await self.registry.held_on(known, targets)
            if existing is not None and (blake3 is None or blake3.matches(existing.blake3)):
                return existing
        now = datetime.now(UTC)
        expires_at = now + timedelta(seconds=self.limits.expiry_seconds)
        session_id = uuid.uuid4()
        staged_in = DATABASE if self.shared.stages_in_database(targets) else LOCAL
        await session_rows.insert(
            self.engine,
            id=session_id,
            created_at=now,
            expires_at=expires_at,
            actor=actor,
            declared_size=size,
            expected_sha256=sha256.raw if sha256 else None,
            expected_blake3=blake3.raw if blake3 else None,
            producer=producer,
            retention_class=retention_class,
            staged_in=staged_in,
        )
        self._hashers[session_id] = DualHasher()
        if staged_in == LOCAL:
            # The row first, then the file: ``expire`` treats a file without a row
            # (and older than ORPHAN_GRACE_SECONDS) as debris of a crash.
            self.path(session_id).touch(mode=0o600, exist_ok=False)
        return UploadSession(session_id, 0, now, expires_at, size)

    async def get(self, session_id: uuid.UUID) -> UploadSession:
        """The session with its current offset (the resume point).

        Raises:
            UploadNotFoundError: unknown, finished, aborted or expired.
        """
        row = await session_rows.fetch(self.engine, session_id)
        if row.staged_in == DATABASE:
            offset = await self.shared.offset(row)
        else:
            offset = self.local.offset(session_id)
        return UploadSession(session_id, offset, row.created_at, row.expires_at, row.declared_size)

    async def append(
        self,
        session_id: uuid.UUID,
        offset: int,
        chunks: AsyncIterable[bytes],
        *,
        content_length: int | None = None,
    ) -> int:
        """Append a chunk at ``offset``; returns the new offset once the bytes are durable.

        Bytes received before a dropped or stalled connection stay staged up
        to the last whole piece written (``INGEST_PIECE_BYTES``; the rest was
        never acknowledged), so the client resumes from the offset HEAD gives.

        Raises:
            UploadNotFoundError: unknown or expired session.
            UploadOffsetMismatchError: ``offset`` is not the current offset; ``detail["offset"]``.
            TooLargeError: the chunk or the blob would exceed a limit.
            ConflictError: another request is appending to this session right now,
                or a finalize claimed its bytes.
            InsufficientStorageError: the staging disk is full; the bytes
                written before it stay in the session (HEAD gives the offset).
        """
        row = await session_rows.fetch(self.engine, session_id)
        if content_length is not None and content_length > self.limits.max_chunk_bytes:
            raise TooLargeError(
                f"chunk exceeds the maximum chunk size {self.limits.max_chunk_bytes}",
                limit=self.limits.max_chunk_bytes,
            )
        staged = self.shared if row.staged_in == DATABASE else self.local
        return await staged.append(row, offset, chunks, content_length=content_length)

    async def finalize(
        self,
        session_id: uuid.UUID,
        *,
        sha256: Digest | None = None,
        blake3: Digest | None = None,
        last_chunk: AsyncIterable[bytes] | None = None,
        offset: int | None = None,
        actor: str,
    ) -> BlobRecord:
        """Check the digests, store the blob, record ``v1.blob.stored``, end the session.

        At least one digest must be known, given here or when the session
        began; every one known is checked (either is a 256-bit cryptographic
        hash of the bytes, and the server computes both). A mismatch ends the
        session too: its bytes are removed, nothing is stored and no event is
        recorded. Once they check out the session is claimed: after a failure
        or a crash a retried PUT completes that blob (its body is ignored).

        Raises:
            InvalidInputError: no digest to check against.
            UploadNotFoundError, UploadOffsetMismatchError, DigestMismatchError,
            SizeMismatchError, ConflictError.
        """
        row = await session_rows.fetch(self.engine, session_id)
        if all(d is None for d in (sha256, blake3, row.expected_sha256, row.expected_blake3)):
            raise InvalidInputError("finalize needs the sha256 or the blake3 of the blob")
        staged = self.shared if row.staged_in == DATABASE else self.local
        return await staged.finalize(
            row, sha256=sha256, blake3=blake3, last_chunk=last_chunk, offset=offset, actor=actor
        )

    async def abort(self, session_id: uuid.UUID) -> None:
        """End a session and remove its bytes.

        A claim it leaves (a finalize failed after claiming) is settled by
        ``expire``. A database-staged session once claimed is not aborted:
        its blob will be stored.

        Raises:
            UploadNotFoundError: unknown, finished or expired.
            ConflictError: a finalize claimed the session's bytes.
        """
        if not await self.local.abort(session_id):
            await session_rows.fetch(self.engine, session_id)  # UploadNotFoundError when gone
            raise ConflictError(f"upload session {session_id} is being finalized")

    async def expire(self, now: datetime | None = None) -> int:
        """Remove expired sessions and their bytes, and staged files no session owns.

        Expired sessions a finalize claimed are completed instead (their blob
        is stored). With several replicas one runs this at a time; each runs
        ``sweep_local`` for its own staging dir.
        """
        now = now or datetime.now(UTC)
        expired, live = await session_rows.expire(self.engine, now)
        await self.local.sweep(expired, live)
        await self.shared.sweep(now)
        self.staging.sweep_dead_owners()
        return len(expired)

    async def sweep_local(self) -> None:
        """This server's staged files no live session owns, and its dead claims and ingests."""
        await self.local.sweep([], await session_rows.live_ids(self.engine))
        self.staging.sweep_dead_owners()

    async def count_active(self) -> int:
        """Sessions not yet expired, deployment-wide."""
        return await session_rows.count_active(self.engine)
