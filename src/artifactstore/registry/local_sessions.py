"""Upload sessions staged in this server's data dir: the single-machine fast path.

A locally staged session's bytes are the file ``<staging>/upload-<id>``; its
offset *is* the file's size, so it survives a crash of the server. Bytes are
hashed as they arrive; the hasher lives in this process keyed by session,
and when it is missing or behind (after a restart, or when another process
on this machine took the previous chunk) the staged prefix is re-hashed once
before new bytes are added. A chunk is acknowledged only after fsync.

Concurrent requests on one session are refused rather than interleaved: each
append holds an exclusive ``flock`` on the staged file. A finalize claims the
bytes first (``registry.finalize``, docs/design/0006), so a crash at any
point of it leaves the session completable by a retried PUT. Used when the
database is embedded or a target backend is ``local`` (docs/design/0007).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import time
import uuid
from typing import TYPE_CHECKING

from artifactstore.digests import DualHasher
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
from artifactstore.registry import session_rows
from artifactstore.registry.finalize import Claims, Intent, check_retry, expected_of, size_limit
from artifactstore.registry.ingest import INGEST_PIECE_BYTES, check_expected, write_chunk
from artifactstore.staged_file import StagedFile
from artifactstore.storage.streams import coalesce

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Iterator
    from pathlib import Path

    from artifactstore.digests import Digest
    from artifactstore.registry.records import BlobRecord
    from artifactstore.registry.service import Registry
    from artifactstore.registry.session_rows import Row

__all__ = ["ORPHAN_GRACE_SECONDS", "UPLOAD_PREFIX", "LocalSessions"]

UPLOAD_PREFIX = "upload-"
ORPHAN_GRACE_SECONDS = 600
_REHASH_CHUNK = 1024 * 1024


class LocalSessions:
    """Appends, finalizes and sweeps of sessions staged in this data dir."""

    def __init__(self, registry: Registry, hashers: dict[uuid.UUID, DualHasher]) -> None:
        self.registry = registry
        self.engine = registry.engine
        self.limits = registry.settings.uploads
        self.root = registry.staging.root
        self.claims = Claims(registry)
        self._hashers = hashers  # shared with ``Uploads``

    def path(self, session_id: uuid.UUID) -> Path:
        """The staged file of a session."""
        return self.root / f"{UPLOAD_PREFIX}{session_id.hex}"

    def offset(self, session_id: uuid.UUID) -> int:
        """The resume point: the staged file's size (all bytes once a finalize claimed them)."""
        try:
            return self.path(session_id).stat().st_size
        except FileNotFoundError:
            size = self.claims.size(session_id)  # all bytes arrived: a PUT completes it
        if size is None:
            raise UploadNotFoundError(f"upload session {session_id} has no staged data")
        return size

    async def append(
        self,
        row: Row,
        offset: int,
        chunks: AsyncIterable[bytes],
        *,
        content_length: int | None,
    ) -> int:
        """Append at ``offset``; the new offset once durable (``Uploads.append``)."""
        session_id: uuid.UUID = row.id
        limit = size_limit(row, self.limits)
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
        row: Row,
        *,
        sha256: Digest | None,
        blake3: Digest | None,
        last_chunk: AsyncIterable[bytes] | None,
        offset: int | None,
        actor: str,
    ) -> BlobRecord:
        """Check, claim, store and record the session's blob (``Uploads.finalize``)."""
        session_id: uuid.UUID = row.id
        with self.claims.lock(session_id) as claim:
            if claim.intent is None:
                if last_chunk is not None:
                    at = offset if offset is not None else self.offset(session_id)
                    await self.append(row, at, last_chunk, content_length=None)
                with self._locked(session_id) as staged:
                    hasher = await self._hasher_at(session_id, staged.size)
                    digests = hasher.result()
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
            else:  # a claim left by a failed or crashed finalize
                await check_retry(claim.intent, row, sha256, blake3, last_chunk)
            try:
                blob = await self.claims.complete(claim, actor=actor)
            except UploadNotFoundError:
                claim.done = True
                await session_rows.delete(self.engine, session_id)
                raise
            await session_rows.delete(self.engine, session_id)
            claim.done = True
        return blob

    async def abort(self, session_id: uuid.UUID) -> bool:
        """End the session and remove its bytes; whether it existed."""
        deleted = await session_rows.delete(self.engine, session_id, unclaimed=True)
        self._hashers.pop(session_id, None)
        self.path(session_id).unlink(missing_ok=True)
        return deleted

    async def sweep(self, expired: list[uuid.UUID], live: set[uuid.UUID]) -> None:
        """Remove expired sessions' files, files no session owns, and settle dead claims."""
        for session_id in expired:
            self._hashers.pop(session_id, None)
            self.path(session_id).unlink(missing_ok=True)
        cutoff = time.time() - ORPHAN_GRACE_SECONDS
        for entry in self.root.glob(f"{UPLOAD_PREFIX}*"):
            try:
                owner = uuid.UUID(entry.name.removeprefix(UPLOAD_PREFIX))
                if owner not in live and entry.stat().st_mtime < cutoff:
                    entry.unlink()
            except (ValueError, FileNotFoundError):
                continue
        await self.claims.settle(live)

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
