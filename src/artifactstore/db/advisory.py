"""PostgreSQL advisory locks that coordinate replicas: the one home for their keys.

Several ``serve`` processes share one database (DESIGN section 13). Work
that must happen once at a time across all of them - finalizing one upload
session, one pass of a periodic job - is guarded by a *session-level*
advisory lock held on a dedicated pooled connection: PostgreSQL releases it
when that connection ends, so a replica killed mid-work never leaves a lock
behind, and no lease or clock has to agree between hosts.

Keys are signed 64-bit integers derived from a namespace and a name, so
locks of different purposes never collide. (The storage backend's per-blob
transaction locks and the replay lock keep their own keys next to the SQL
they guard: they are transaction-scoped and never held across awaits.)
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import TYPE_CHECKING

import sqlalchemy as sa

from artifactstore.db.engine import autocommit

if TYPE_CHECKING:
    import uuid
    from collections.abc import AsyncIterator

    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["job_key", "session_key", "try_hold"]

_NAMESPACE = b"artifactstore.advisory\x00"


def _key(kind: bytes, name: bytes) -> int:
    digest = hashlib.sha256(_NAMESPACE + kind + b"\x00" + name).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def session_key(session_id: uuid.UUID) -> int:
    """The lock of one upload session's finalize."""
    return _key(b"upload-session", session_id.bytes)


def job_key(name: str) -> int:
    """The lock of a periodic job (e.g. ``upload-expiry``): one replica runs it at a time."""
    return _key(b"job", name.encode())


@contextlib.asynccontextmanager
async def try_hold(engine: AsyncEngine, key: int) -> AsyncIterator[bool]:
    """Hold advisory lock ``key`` for the block if nobody else does; yields whether it is held.

    The lock lives on a connection kept out of the pool for the block. It is
    released on exit; if that fails (the connection died, which released it
    anyway) the connection is discarded rather than pooled with a lock on it.
    """
    async with autocommit(engine) as conn:
        held = bool(await conn.scalar(sa.select(sa.func.pg_try_advisory_lock(key))))
        try:
            yield held
        finally:
            if held:
                try:
                    await conn.scalar(sa.select(sa.func.pg_advisory_unlock(key)))
                except BaseException:
                    await conn.invalidate()
                    raise
