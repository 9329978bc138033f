"""Bytes of database-staged upload sessions: the only SQL home of ``upload_parts``.

A session whose calls may reach any replica (docs/design/0007) keeps its
staged bytes in PostgreSQL, piece by piece, each piece committed before the
next is read from the client - so a piece acknowledged by an offset is
durable and visible to every replica, and a replica killed mid-PATCH loses
only the piece it was receiving.

Two guards, both in the database, none held across requests:

* ``(session_id, offset)`` is the primary key: two requests appending at one
  offset cannot both succeed, so the pieces never overlap and stay contiguous.
* Each piece is inserted only while the session row is unclaimed, under
  ``FOR SHARE`` of that row; a finalize claims it under ``FOR UPDATE`` and
  reads the end offset in the same transaction - so no piece lands after the
  bytes were hashed and claimed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from artifactstore.db.engine import autocommit
from artifactstore.db.tables import upload_parts, upload_sessions
from artifactstore.errors import ConflictError, UploadNotFoundError

if TYPE_CHECKING:
    import uuid
    from collections.abc import AsyncIterator

    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["PARTS_PER_READ", "StagedParts"]

#: Pieces fetched per query when reading a session back (bounded memory).
PARTS_PER_READ = 4


class StagedParts:
    """The pieces of database-staged sessions on one engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def end(self, session_id: uuid.UUID) -> int:
        """The session's offset: where the next piece starts (0 when none)."""
        async with autocommit(self.engine) as conn:
            return int(await conn.scalar(_end_of(session_id)) or 0)

    async def insert(self, session_id: uuid.UUID, offset: int, piece: bytes) -> None:
        """Commit one piece at ``offset``.

        Raises:
            ConflictError: another request wrote at this offset, or the session is being finalized.
            UploadNotFoundError: the session is gone.
        """
        unclaimed = (
            sa.select(
                sa.literal(session_id).label("session_id"),
                sa.literal(offset, sa.BigInteger).label("offset"),
                sa.literal(len(piece), sa.Integer).label("size"),
                sa.literal(piece, sa.LargeBinary).label("data"),
            )
            .select_from(upload_sessions)
            .where(upload_sessions.c.id == session_id, upload_sessions.c.claim.is_(None))
            .with_for_update(read=True)
        )
        try:
            async with autocommit(self.engine) as conn:
                result = await conn.execute(
                    upload_parts.insert().from_select(
                        ["session_id", "offset", "size", "data"], unclaimed
                    )
                )
        except IntegrityError as exc:
            if "pk_upload_parts" in str(exc.orig):
                raise ConflictError(
                    f"upload session {session_id} is busy with another request"
                ) from None
            raise UploadNotFoundError(f"upload session {session_id} not found") from None
        if not result.rowcount:
            await self._why_refused(session_id)

    async def _why_refused(self, session_id: uuid.UUID) -> None:
        async with autocommit(self.engine) as conn:
            claim = (
                await conn.execute(
                    sa.select(upload_sessions.c.claim).where(upload_sessions.c.id == session_id)
                )
            ).first()
        if claim is None:
            raise UploadNotFoundError(f"upload session {session_id} not found")
        raise ConflictError(f"upload session {session_id} is being finalized; retry the PUT")

    async def pieces(self, session_id: uuid.UUID, length: int) -> AsyncIterator[bytes]:
        """The first ``length`` staged bytes, in order, a few pieces per query.

        Raises:
            UploadNotFoundError: pieces are missing (the session ended meanwhile).
        """
        at = 0
        while at < length:
            async with autocommit(self.engine) as conn:
                rows = (
                    await conn.execute(
                        sa.select(upload_parts.c.offset, upload_parts.c.data)
                        .where(
                            upload_parts.c.session_id == session_id,
                            upload_parts.c.offset >= at,
                        )
                        .order_by(upload_parts.c.offset)
                        .limit(PARTS_PER_READ)
                    )
                ).all()
            if not rows:
                break
            for offset, data in rows:
                if offset != at:
                    break
                piece = bytes(data)[: length - at]
                at += len(piece)
                yield piece
                if at >= length:
                    return
            else:
                continue
            break
        if at < length:
            raise UploadNotFoundError(
                f"upload session {session_id}: staged bytes end at {at}, expected {length}"
            )

    async def claim(self, session_id: uuid.UUID, end: int, intent: bytes) -> bool:
        """Freeze the session's bytes under ``intent`` if they still end at ``end``.

        False when a piece landed after they were hashed (the caller hashes
        again) or another finalize claimed them first.
        """
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    sa.select(upload_sessions.c.claim)
                    .where(upload_sessions.c.id == session_id)
                    .with_for_update()
                )
            ).first()
            if row is None:
                raise UploadNotFoundError(f"upload session {session_id} not found")
            if row.claim is not None:
                return False
            # A new statement: its snapshot sees every piece committed before the row lock.
            if int(await conn.scalar(_end_of(session_id)) or 0) != end:
                return False
            await conn.execute(
                sa.update(upload_sessions)
                .where(upload_sessions.c.id == session_id)
                .values(claim=intent)
            )
        return True


def _end_of(session_id: uuid.UUID) -> sa.Select[tuple[int]]:
    """Where a session's next piece starts: the end of its last one (0 when none)."""
    return sa.select(
        sa.func.coalesce(sa.func.max(upload_parts.c.offset + upload_parts.c.size), 0)
    ).where(upload_parts.c.session_id == session_id)
