"""Resumable upload sessions (DESIGN section 5; modelled on OCI chunked upload and tus).

A session is a row in ``upload_sessions`` (operational state, not history)
plus a staged file ``<staging>/upload-<id>``. The session's offset *is* the
staged file's size, so it survives a crash of the server: after a restart a
client asks for the offset and continues from there.

Bytes are hashed as they arrive. The hasher lives in this process's memory
keyed by session; when it is missing or behind (after a restart, or when
another process took the previous chunk) the staged prefix is re-hashed once
before new bytes are added. A chunk is acknowledged only after fsync.

Concurrent requests on one session are refused rather than interleaved: each
append holds an exclusive ``flock`` on the staged file. A finalize claims the
bytes first (``registry.finalize``, docs/design/0006), so a crash at any
point of it leaves the session completable by a retried PUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from artifactstore.db.engine import autocommit
from artifactstore.db.tables import upload_sessions
from artifactstore.digests import BlobDigests, Digest, DualHasher
from artifactstore.errors import (
    ConflictError,
    DigestMismatchError,
    InvalidInputError,
    SizeMismatchError,
    TooLargeError,
    UploadNotFoundError,
    UploadOffsetMismatchError,
    disk_space_checked,
)
from artifactstore.registry.finalize import Claim, Claims, Intent, expected_of
from artifactstore.registry.ingest import INGEST_PIECE_BYTES, check_expected, write_chunk
from artifactstore.registry.shared_sessions import DATABASE, LOCAL, SharedSessions
from artifactstore.staged_file import StagedFile
from artifactstore.storage.streams import coalesce

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Iterator
    from pathlib import Path

    from artifactstore.registry.records import BlobRecord
    from artifactstore.registry.service import Registry

__all__ = ["UploadSession", "Uploads"]

UPLOAD_PREFIX = "upload-"
ORPHAN_GRACE_SECONDS = 600
_REHASH_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class UploadSession:
    """A session's public state."""

    id: uuid.UUID
    offset: int
    created_at: datetime
    expires_at: datetime
    declared_size: int | None


class Uploads:
    """Upload sessions over a registry's staging directory and database."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.engine = registry.engine
        self.limits = registry.settings.uploads
        self.staging = registry.staging
        self.claims = Claims(registry)
        self._hashers: dict[uuid.UUID, DualHasher] = {}
        self.shared = SharedSessions(registry, self._hashers)

    def path(self, session_id: uuid.UUID) -> Path:
        """The staged file of a session."""
        return self.staging.root / f"{UPLOAD_PREFIX}{session_id.hex}"

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
        session_id = uuid.uuid4()
        staged_in = DATABASE if self.shared.stages_in_database(targets) else LOCAL
        async with autocommit(self.engine) as conn:
            await conn.execute(
                upload_sessions.insert().values(
                    id=session_id,
                    created_at=now,
                    expires_at=now + timedelta(seconds=self.limits.expiry_seconds),
                    actor=actor,
                    declared_size=size,
                    expected_sha256=sha256.raw if sha256 else None,
                    expected_blake3=blake3.raw if blake3 else None,
                    producer=producer,
                    retention_class=retention_class,
                    staged_in=staged_in,
                )
            )
        self._hashers[session_id] = DualHasher()
        expires_at = now + timedelta(seconds=self.limits.expiry_seconds)
        if staged_in == DATABASE:
            return UploadSession(session_id, 0, now, expires_at, size)
        # The row first, then the file: ``expire`` treats a file without a row
        # (and older than ORPHAN_GRACE_SECONDS) as debris of a crash.
        self.path(session_id).touch(mode=0o600, exist_ok=False)
        return UploadSession(session_id, 0, now, expires_at, size)

    async def _row(self, session_id: uuid.UUID) -> sa.Row[tuple[object, ...]]:
        async with autocommit(self.engine) as conn:
            row = (
                await conn.execute(
                    sa.select(upload_sessions).where(upload_sessions.c.id == session_id)
                )
            ).first()
        if row is None or row.expires_at <= datetime.now(UTC):
            raise UploadNotFoundError(f"upload session {session_id} not found or expired")
        return row

    async def get(self, session_id: uuid.UUID) -> UploadSession:
        """The session with its current offset (the resume point).

        Raises:
            UploadNotFoundError: unknown, finished, aborted or expired.
        """
        row = await self._row(session_id)
        if row.staged_in == DATABASE:
            offset: int | None = await self.shared.offset(row)
            return UploadSession(
                session_id, offset or 0, row.created_at, row.expires_at, row.declared_size
            )
        try:
            offset = self.path(session_id).stat().st_size
        except FileNotFoundError:
            offset = self.claims.size(session_id)  # all bytes arrived: a PUT completes it
        if offset is None:
            raise UploadNotFoundError(f"upload session {session_id} has no staged data")
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
            ConflictError: another request is appending to this session right now.
            InsufficientStorageError: the staging disk is full; the bytes
                written before it stay in the session (HEAD gives the offset).
        """
        row = await self._row(session_id)
        limit = self.limits.max_blob_bytes
        if row.declared_size is not None:
            limit = min(limit, row.declared_size)
        if content_length is not None and content_length > self.limits.max_chunk_bytes:
            raise TooLargeError(
                f"chunk exceeds the maximum chunk size {self.limits.max_chunk_bytes}",
                limit=self.limits.max_chunk_bytes,
            )
        if row.staged_in == DATABASE:
            return await self.shared.append(row, offset, chunks, content_length=content_length)
        with disk_space_checked("staging"), self._locked(session_id) as staged:
            current = staged.size
            if offset != current:
                raise UploadOffsetMismatchError(
                    f"Upload-Offset {offset} does not match the session offset {current}",
                    offset=current,
                )
            if content_length is not None and current + content_length > limit:
                raise TooLargeError(f"the blob would exceed {limit} bytes", limit=limit)
            hasher = await self._hasher_at(session_id, current)
            received = 0
            try:
                async for chunk in coalesce(chunks, INGEST_PIECE_BYTES):
                    received += len(chunk)
                    if received > self.limits.max_chunk_bytes or current + received > limit:
                        raise TooLargeError(
                            f"the chunk or blob exceeds its limit ({limit})", limit=limit
                        )
                    await asyncio.to_thread(write_chunk, hasher, staged, chunk)
            finally:
                await asyncio.to_thread(hasher.drain)
                await asyncio.to_thread(staged.sync)
                if hasher.size != staged.size:
                    self._hashers.pop(session_id, None)
            return current + received

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
        recorded. Once they check out the session is claimed (``registry.finalize``):
        after a failure or a crash a retried PUT completes that blob (its body is ignored).

        Raises:
            InvalidInputError: no digest to check against.
            UploadNotFoundError, UploadOffsetMismatchError, DigestMismatchError,
            SizeMismatchError, ConflictError.
        """
        row = await self._row(session_id)
        if all(d is None for d in (sha256, blake3, row.expected_sha256, row.expected_blake3)):
            raise InvalidInputError("finalize needs the sha256 or the blake3 of the blob")
        if row.staged_in == DATABASE:
            return await self.shared.finalize(
                row, sha256=sha256, blake3=blake3, last_chunk=last_chunk, offset=offset, actor=actor
            )
        with self.claims.lock(session_id) as claim:
            if claim.intent is None:
                await self._claim(
                    claim,
                    row,
                    sha256=sha256,
                    blake3=blake3,
                    body=last_chunk,
                    offset=offset,
                    actor=actor,
                )
            else:  # a claim left by a failed or crashed finalize
                if last_chunk is not None:
                    async for _ in last_chunk:
                        pass
                check_expected(claim.intent.digests, expected_of(row, sha256, blake3))
            try:
                blob = await self.claims.complete(claim, actor=actor)
            except UploadNotFoundError:
                claim.done = True
                await self._delete_row(session_id)
                raise
            await self._delete_row(session_id)
            claim.done = True
        return blob

    async def _claim(
        self,
        claim: Claim,
        row: sa.Row[tuple[object, ...]],
        *,
        sha256: Digest | None,
        blake3: Digest | None,
        body: AsyncIterable[bytes] | None,
        offset: int | None,
        actor: str,
    ) -> None:
        """Hash the session's bytes, check them and claim them; a mismatch ends the session."""
        session_id = claim.session_id
        if body is not None:
            at = offset if offset is not None else self.path(session_id).stat().st_size
            await self.append(session_id, at, body)
        with self._locked(session_id) as staged:
            hasher = await self._hasher_at(session_id, staged.size)
            digests: BlobDigests = hasher.result()
            try:
                check_expected(digests, expected_of(row, sha256, blake3))
            except (InvalidInputError, DigestMismatchError, SizeMismatchError):
                await self.abort(session_id)
                raise
            targets = self.registry.store.targets(
                producer=row.producer, retention_class=row.retention_class
            )
            # Under the session's lock: no append slips in between hash and claim.
            self.claims.take(session_id, claim, Intent(digests, targets, actor))
        self._hashers.pop(session_id, None)

    async def _delete_row(self, session_id: uuid.UUID, *, unclaimed: bool = False) -> bool:
        where = [upload_sessions.c.id == session_id]
        if unclaimed:
            where.append(upload_sessions.c.claim.is_(None))
        async with autocommit(self.engine) as conn:
            result = await conn.execute(sa.delete(upload_sessions).where(*where))
        return bool(result.rowcount)

    async def abort(self, session_id: uuid.UUID) -> None:
        """End a session and remove its bytes; unknown sessions raise ``UploadNotFoundError``.

        A claim it leaves (a finalize failed after claiming) is settled by
        ``expire``. A database-staged session once claimed is not aborted
        (409): its blob will be stored.
        """
        deleted = await self._delete_row(session_id, unclaimed=True)
        self._hashers.pop(session_id, None)
        self.path(session_id).unlink(missing_ok=True)
        if not deleted:
            await self._row(session_id)  # UploadNotFoundError when it is gone
            raise ConflictError(f"upload session {session_id} is being finalized")

    async def expire(self, now: datetime | None = None) -> int:
        """Remove expired sessions and their bytes, and staged files no session owns."""
        now = now or datetime.now(UTC)
        async with self.engine.begin() as conn:
            expired = (
                (
                    await conn.execute(
                        sa.delete(upload_sessions)
                        .where(
                            upload_sessions.c.expires_at <= now,
                            upload_sessions.c.claim.is_(None),
                        )
                        .returning(upload_sessions.c.id)
                    )
                )
                .scalars()
                .all()
            )
            live = set((await conn.execute(sa.select(upload_sessions.c.id))).scalars().all())
        for session_id in expired:
            self._hashers.pop(session_id, None)
            self.path(session_id).unlink(missing_ok=True)
        cutoff = time.time() - ORPHAN_GRACE_SECONDS
        for entry in self.staging.root.glob(f"{UPLOAD_PREFIX}*"):
            try:
                owner = uuid.UUID(entry.name.removeprefix(UPLOAD_PREFIX))
                if owner not in live and entry.stat().st_mtime < cutoff:
                    entry.unlink()
            except (ValueError, FileNotFoundError):
                continue
        await self.claims.settle(live)
        await self.shared.sweep(now)
        self.staging.sweep_dead_owners()
        return len(expired)

    async def count_active(self) -> int:
        """Sessions not yet expired."""
        async with self.engine.connect() as conn:
            value = await conn.scalar(
                sa.select(sa.func.count()).where(upload_sessions.c.expires_at > datetime.now(UTC))
            )
        return int(value or 0)

    @contextlib.contextmanager
    def _locked(self, session_id: uuid.UUID) -> Iterator[StagedFile]:
        try:
            staged = StagedFile(self.path(session_id), create=False)
        except FileNotFoundError:
            if self.claims.size(session_id) is not None:
                raise ConflictError(
                    f"upload session {session_id} is being finalized; retry the PUT"
                ) from None
            raise UploadNotFoundError(f"upload session {session_id} has no staged data") from None
        with staged:
            try:
                fcntl.flock(staged.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConflictError(
                    f"upload session {session_id} is busy with another request"
                ) from None
            yield staged

    async def _hasher_at(self, session_id: uuid.UUID, offset: int) -> DualHasher:
        """The session's hasher positioned at ``offset``, re-hashing the staged prefix if needed."""
        hasher = self._hashers.get(session_id)
        if hasher is not None and hasher.size == offset:
            return hasher
        hasher = DualHasher()
        await asyncio.to_thread(_rehash, hasher, self.path(session_id), offset)
        self._hashers[session_id] = hasher
        return hasher


def _rehash(hasher: DualHasher, path: Path, length: int) -> None:
    with path.open("rb") as fh:
        remaining = length
        while remaining:
            block = fh.read(min(_REHASH_CHUNK, remaining))
            if not block:
                break
            hasher.update(block)
            remaining -= len(block)
