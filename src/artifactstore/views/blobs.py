"""Blob and storage-location views: which blobs exist and where each copy lives.

Consumes ``v1.blob.stored`` and the ``v1.storage.location_*`` events. A copy's
state moves stored -> verified / failed / missing -> ... -> deleted; a later
``v1.blob.stored`` for the same backend (a re-upload or a restore) makes it
``stored`` again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from artifactstore.db.tables import blobs, storage_locations
from artifactstore.events.payloads import (
    BlobStored,
    LocationDeleted,
    LocationFailed,
    LocationMissing,
    LocationVerified,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection

    from artifactstore.events.log import Event

__all__ = ["LocationState", "apply_blob_event", "readable_copies"]


class LocationState:
    """The states of a storage location (DESIGN section 1)."""

    STORED = "stored"
    VERIFIED = "verified"
    FAILED = "failed"
    MISSING = "missing"
    DELETED = "deleted"
    READABLE = (STORED, VERIFIED)


async def apply_blob_event(
    conn: AsyncConnection,
    event: Event,
    data: BlobStored | LocationVerified | LocationFailed | LocationMissing | LocationDeleted,
) -> None:
    """Fold one blob or location event into the views."""
    at = event.occurred_at
    if isinstance(data, BlobStored):
        await conn.execute(
            insert(blobs)
            .values(
                sha256=data.sha256,
                blake3=data.blake3,
                size=data.size,
                stored_at=at,
                stored_seq=event.seq,
            )
            .on_conflict_do_nothing(index_elements=["sha256"])
        )
        stmt = insert(storage_locations).values(
            sha256=data.sha256,
            backend=data.backend,
            key=data.key,
            state=LocationState.STORED,
            detail="",
            updated_at=at,
            updated_seq=event.seq,
            verified_at=None,
        )
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["sha256", "backend"],
                set_={
                    "key": stmt.excluded.key,
                    "state": stmt.excluded.state,
                    "detail": "",
                    "updated_at": at,
                    "updated_seq": event.seq,
                },
            )
        )
        return
    values: dict[str, object] = {"updated_at": at, "updated_seq": event.seq}
    if isinstance(data, LocationVerified):
        values |= {"state": LocationState.VERIFIED, "detail": "", "verified_at": at}
    elif isinstance(data, LocationFailed):
        values |= {"state": LocationState.FAILED, "detail": data.reason}
    elif isinstance(data, LocationMissing):
        values |= {"state": LocationState.MISSING, "detail": "object not found"}
    else:
        values |= {"state": LocationState.DELETED, "detail": ""}
    await conn.execute(
        sa.update(storage_locations)
        .where(
            storage_locations.c.sha256 == data.sha256,
            storage_locations.c.backend == data.backend,
        )
        .values(**values)
    )


async def readable_copies(
    conn: AsyncConnection, copies: Sequence[tuple[bytes, str]]
) -> set[tuple[bytes, str]]:
    """Which of ``(sha256, backend)`` have a readable location, in one statement."""
    if not copies:
        return set()
    rows = await conn.execute(
        sa.select(storage_locations.c.sha256, storage_locations.c.backend).where(
            sa.tuple_(storage_locations.c.sha256, storage_locations.c.backend).in_(list(copies)),
            storage_locations.c.state.in_(LocationState.READABLE),
        )
    )
    return {(bytes(r.sha256), r.backend) for r in rows}
