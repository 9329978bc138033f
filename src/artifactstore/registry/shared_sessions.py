"""Upload sessions any replica can continue: bytes in PostgreSQL (docs/design/0007).

A session is *database-staged* when its blob goes only to shared backends
(no ``local`` target) and the database is external - exactly when several
replicas may serve it. Then its bytes live in ``upload_parts``
(``registry.staged_parts``) and every call - PATCH, HEAD, PUT, DELETE - may
reach any replica; a replica that dies mid-PATCH loses at most the piece it
was receiving, and the client resumes elsewhere from the offset HEAD gives.

Hashing stays linear in the blob's size: a replica that has seen every
byte of a session in order keeps its hasher in memory; any other replica
(a switch, a restart) drops it and the finalize hashes the staged bytes
once by reading them back - never once per switch.

A finalize holds the session's advisory lock (``db.advisory``) from the
check to the end: the lock dies with its connection, so a finalize on a
killed replica never blocks a retry. Its intent is the session row's
``claim``: once set the bytes are frozen and the blob will be stored, by a
retried PUT on any replica or by the expiry sweep (``complete``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from artifactstore.db.advisory import session_key, try_hold
from artifactstore.digests import DualHasher
from artifactstore.errors import (
    ConflictError,
    DigestMismatchError,
    InvalidInputError,
    SizeMismatchError,
    TooLargeError,
    UploadOffsetMismatchError,
)
from artifactstore.events import BlobStored
from artifactstore.registry import session_rows
from artifactstore.registry.finalize import Intent, check_retry, expected_of, size_limit
from artifactstore.registry.ingest import INGEST_PIECE_BYTES, check_expected
from artifactstore.registry.staged_parts import StagedParts
from artifactstore.storage.streams import coalesce
from artifactstore.testpoint import pause_at

if TYPE_CHECKING:
    import uuid
    from collections.abc import AsyncIterable
    from datetime import datetime

    from artifactstore.digests import BlobDigests, Digest
    from artifactstore.registry.records import BlobRecord
    from artifactstore.registry.service import Registry
    from artifactstore.registry.session_rows import Row

__all__ = ["DATABASE", "LOCAL", "SharedSessions"]

LOCAL = "local"
DATABASE = "database"
#: The largest piece stored in one row (a PATCH body is cut into pieces this big at most).
MAX_PIECE_BYTES = 4 * 1024 * 1024


class SharedSessions:
    """Appends, finalizes and sweeps of database-staged sessions."""

    def __init__(self, registry: Registry, hashers: dict[uuid.UUID, DualHasher]) -> None:
        self.registry = registry
        self.engine = registry.engine
        self.parts = StagedParts(registry.engine)
        self.limits = registry.settings.uploads
        self._hashers = hashers  # shared with ``Uploads``: this replica's in-order hashers

    def stages_in_database(self, targets: tuple[str, ...]) -> bool:
        """Whether a session for ``targets`` must be reachable from every replica."""
        if self.registry.database.embedded is not None:
            return False  # the embedded database lives in one data dir: one server
        return all(self.registry.store.backend(name).kind != LOCAL for name in targets)

    async def offset(self, row: Row) -> int:
        """The session's resume point (all its bytes once claimed)."""
        if row.claim is not None:
            return _intent_of(row).digests.size
        return await self.parts.end(row.id)

    async def append(
        self,
        row: Row,
        offset: int,
        chunks: AsyncIterable[bytes],
        *,
        content_length: int | None,
    ) -> int:
        """Append at ``offset``, piece by committed piece; the new offset (``Uploads.append``)."""
        session_id: uuid.UUID = row.id
        limit = size_limit(row, self.limits)
        current = await self.parts.end(session_id)
        if offset != current:
            raise UploadOffsetMismatchError(
                f"Upload-Offset {offset} does not match the session offset {current}",
                offset=current,
            )
        if content_length is not None and current + content_length > limit:
            raise TooLargeError(f"the blob would exceed {limit} bytes", limit=limit)
        hasher = self._hashers.pop(session_id, None)
        if hasher is not None and hasher.size != current:
            hasher = None  # another replica took bytes meanwhile: finalize re-hashes
        at = current
        chunk_limit = current + self.limits.max_chunk_bytes
        try:
            async for chunk in coalesce(chunks, INGEST_PIECE_BYTES):
                if at + len(chunk) > min(limit, chunk_limit):
                    raise TooLargeError(
                        f"the chunk or blob exceeds its limit ({limit})", limit=limit
                    )
                for start in range(0, len(chunk), MAX_PIECE_BYTES):
                    piece = chunk[start : start + MAX_PIECE_BYTES]
                    if hasher is None:
                        await self.parts.insert(session_id, at, piece)
                    else:
                        await asyncio.gather(
                            self.parts.insert(session_id, at, piece),
                            asyncio.to_thread(hasher.update, piece),
                        )
                    at += len(piece)
        finally:
            if hasher is not None and hasher.size == at:
                self._hashers[session_id] = hasher
        return at

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
        """Check, claim, store and record the session's blob (see ``Uploads.finalize``)."""
        session_id: uuid.UUID = row.id
        async with try_hold(self.engine, session_key(session_id)) as held:
            if not held:
                raise ConflictError(f"upload session {session_id} is being finalized")
            if row.claim is None and last_chunk is not None:
                at = offset if offset is not None else await self.parts.end(session_id)
                await self.append(row, at, last_chunk, content_length=None)
            row = await session_rows.fetch(self.engine, session_id, expired_too=True)
            if row.claim is None:
                intent = await self._claim(row, sha256=sha256, blake3=blake3, actor=actor)
            else:  # claimed by a finalize that failed or died: finish it
                intent = _intent_of(row)
                await check_retry(intent, row, sha256, blake3, last_chunk)
            return await self.complete(session_id, intent, actor=actor)

    async def _claim(
        self, row: Row, *, sha256: Digest | None, blake3: Digest | None, actor: str
    ) -> Intent:
        """Hash the staged bytes (once), check them and freeze them under an intent."""
        session_id: uuid.UUID = row.id
        expected = expected_of(row, sha256, blake3)
        end = await self.parts.end(session_id)
        hasher = self._hashers.pop(session_id, None)
        if hasher is None or hasher.size != end:
            hasher = DualHasher()
            async for piece in self.parts.pieces(session_id, end):
                await asyncio.to_thread(hasher.update, piece)
        digests: BlobDigests = hasher.result()
        try:
            check_expected(digests, expected)
        except (InvalidInputError, DigestMismatchError, SizeMismatchError):
            await session_rows.delete(self.engine, session_id)
            raise
        targets = self.registry.store.targets(
            producer=row.producer, retention_class=row.retention_class
        )
        intent = Intent(digests, targets, actor)
        if not await self.parts.claim(session_id, end, intent.encode()):
            raise ConflictError(f"upload session {session_id} changed while being finalized")
        return intent

    async def complete(self, session_id: uuid.UUID, intent: Intent, *, actor: str) -> BlobRecord:
        """Store a claimed session's bytes on every target lacking a copy, record, end it.

        Idempotent (keys are content-addressed, recording skips recorded
        copies): run again after a crash at any point, it finishes the job.
        """
        await pause_at("finalize:claimed")
        d = intent.digests
        stored = []
        for name in await self.registry.lacking_copies(d.sha256, intent.targets):
            info = await self.registry.store.backend(name).put_stream(
                d.sha256, self.parts.pieces(session_id, d.size), d.size
            )
            stored.append(BlobStored.copy_of(d, name, info.key))
        await pause_at("finalize:stored")
        blob, _ = await self.registry.record_stored(d.sha256, stored, actor=actor)
        await pause_at("finalize:recorded")
        await session_rows.delete(self.engine, session_id)
        return blob

    async def sweep(self, now: datetime) -> int:
        """Finish expired claimed sessions nobody is finalizing; how many ended."""
        done = 0
        for row in await session_rows.claimed_expired(self.engine, now):
            async with try_hold(self.engine, session_key(row.id)) as held:
                if held:
                    intent = _intent_of(row)
                    await self.complete(row.id, intent, actor=intent.actor)
                    done += 1
        return done


def _intent_of(row: Row) -> Intent:
    claim = row.claim
    intent = Intent.decode(bytes(claim)) if isinstance(claim, bytes | memoryview) else None
    if intent is None:
        raise ConflictError(f"upload session {row.id} has an unreadable claim")
    return intent
