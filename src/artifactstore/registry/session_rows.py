"""Upload session rows: the only SQL home of ``upload_sessions``.

A row is operational state, not history: who opened the session, what it
declared, where its bytes are staged (``staged_in``) and, for a
database-staged session being finalized, its ``claim``. Deleting a row ends
the session; a database-staged session's pieces go with it (``ON DELETE
CASCADE``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from artifactstore.db.engine import autocommit
from artifactstore.db.tables import upload_sessions
from artifactstore.errors import UploadNotFoundError

if TYPE_CHECKING:
    import uuid

    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "Row",
    "claimed_expired",
    "count_active",
    "delete",
    "expire",
    "fetch",
    "insert",
    "live_ids",
]

Row = sa.Row[tuple[object, ...]]


async def insert(engine: AsyncEngine, **values: object) -> None:
    """Open a session row."""
    async with autocommit(engine) as conn:
        await conn.execute(upload_sessions.insert().values(**values))


async def fetch(engine: AsyncEngine, session_id: uuid.UUID, *, expired_too: bool = False) -> Row:
    """The session's row.

    Raises:
        UploadNotFoundError: no such row, or it expired (unless ``expired_too``).
    """
    async with autocommit(engine) as conn:
        row = (
            await conn.execute(sa.select(upload_sessions).where(upload_sessions.c.id == session_id))
        ).first()
    if row is None or (not expired_too and row.expires_at <= datetime.now(UTC)):
        raise UploadNotFoundError(f"upload session {session_id} not found or expired")
    return row


async def delete(engine: AsyncEngine, session_id: uuid.UUID, *, unclaimed: bool = False) -> bool:
    """End a session (only if no finalize claimed it, with ``unclaimed``); whether it existed."""
    where = [upload_sessions.c.id == session_id]
    if unclaimed:
        where.append(upload_sessions.c.claim.is_(None))
    async with autocommit(engine) as conn:
        result = await conn.execute(sa.delete(upload_sessions).where(*where))
    return bool(result.rowcount)


async def expire(engine: AsyncEngine, now: datetime) -> tuple[list[uuid.UUID], set[uuid.UUID]]:
    """Delete the expired unclaimed sessions; ``(expired ids, ids still live)``, one snapshot."""
    async with engine.begin() as conn:
        expired = (
            await conn.execute(
                sa.delete(upload_sessions)
                .where(upload_sessions.c.expires_at <= now, upload_sessions.c.claim.is_(None))
                .returning(upload_sessions.c.id)
            )
        ).scalars()
        gone = list(expired)
        live = set((await conn.execute(sa.select(upload_sessions.c.id))).scalars())
    return gone, live


async def live_ids(engine: AsyncEngine) -> set[uuid.UUID]:
    """Every session that still has a row (expired or not)."""
    async with autocommit(engine) as conn:
        return set((await conn.execute(sa.select(upload_sessions.c.id))).scalars())


async def claimed_expired(engine: AsyncEngine, now: datetime) -> list[Row]:
    """Expired sessions whose finalize claimed the bytes (their blob is still to be stored)."""
    async with autocommit(engine) as conn:
        return list(
            (
                await conn.execute(
                    sa.select(upload_sessions).where(
                        upload_sessions.c.expires_at <= now, upload_sessions.c.claim.is_not(None)
                    )
                )
            ).all()
        )


async def count_active(engine: AsyncEngine) -> int:
    """Sessions not yet expired (deployment-wide: every replica counts the same rows)."""
    async with engine.connect() as conn:
        value = await conn.scalar(
            sa.select(sa.func.count()).where(upload_sessions.c.expires_at > datetime.now(UTC))
        )
    return int(value or 0)
