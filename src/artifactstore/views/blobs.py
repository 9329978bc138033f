"""Blob and storage-location views: which blobs exist and where each copy lives.

Consumes ``v1.blob.stored`` and the ``v1.storage.location_*`` events. A copy's
state moves stored -> verified / failed / missing -> ... -> deleted; a later
``v1.blob.stored`` for the same backend (a re-upload or a restore) makes it
``stored`` again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from artifactstore.db.batch import Changes, StatementBatch, insert_rows, update_rows
from artifactstore.db.tables import blobs, storage_locations
from artifactstore.events.payloads import (
    BlobStored,
    LocationDeleted,
    LocationFailed,
    LocationMissing,
    LocationVerified,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection

    from artifactstore.events.log import Event

__all__ = ["BlobFold", "LocationState", "readable_copies"]

_KEEP_VERIFIED = "COALESCE({new}.verified_at, t.verified_at)"


class LocationState:
    """The states of a storage location (DESIGN section 1)."""

    STORED = "stored"
    VERIFIED = "verified"
    FAILED = "failed"
    MISSING = "missing"
    DELETED = "deleted"
    READABLE = (STORED, VERIFIED)


class BlobFold:
    """A batch's changes to ``blobs`` and ``storage_locations``, folded in event order.

    Semantics (those of one statement per event): ``blobs`` keeps the first
    ``v1.blob.stored`` of a sha256 (insert, do nothing on conflict); a
    ``v1.blob.stored`` upserts its location as ``stored`` but keeps its
    ``verified_at``; the other location events update an existing location
    and do nothing to an absent one. ``verified_at`` is only ever set, never
    cleared, so the flush can merge it with ``COALESCE``.
    """

    def __init__(self) -> None:
        self.blobs: Changes[bytes] = Changes()
        self.locations: Changes[tuple[bytes, str]] = Changes()

    def add(
        self,
        event: Event,
        data: BlobStored | LocationVerified | LocationFailed | LocationMissing | LocationDeleted,
    ) -> None:
        """Fold one blob or location event into the batch."""
        at, seq = event.occurred_at, event.seq
        key = (data.sha256, data.backend)
        if isinstance(data, BlobStored):
            self.blobs.rows.setdefault(
                data.sha256,
                {
                    "sha256": data.sha256,
                    "blake3": data.blake3,
                    "size": data.size,
                    "stored_at": at,
                    "stored_seq": seq,
                },
            )
            stored = {"key": data.key, "state": LocationState.STORED, "detail": ""}
            row = self.locations.rows.setdefault(
                key, {"sha256": data.sha256, "backend": data.backend, "verified_at": None}
            )
            row.update(stored, updated_at=at, updated_seq=seq)
            return
        values: dict[str, object] = {"updated_at": at, "updated_seq": seq}
        if isinstance(data, LocationVerified):
            values |= {"state": LocationState.VERIFIED, "detail": "", "verified_at": at}
        elif isinstance(data, LocationFailed):
            values |= {"state": LocationState.FAILED, "detail": data.reason}
        elif isinstance(data, LocationMissing):
            values |= {"state": LocationState.MISSING, "detail": "object not found"}
        else:
            values |= {"state": LocationState.DELETED, "detail": ""}
        self.locations.update(key, values)

    def collect(self, batch: StatementBatch, targets: Mapping[str, str]) -> None:
        """Queue the batch's statements: updates of existing locations first, then new rows."""
        update_rows(
            batch,
            storage_locations,
            self.locations,
            targets,
            match=("sha256", "backend"),
            assign={
                "state": "v.state",
                "detail": "v.detail",
                "updated_at": "v.updated_at",
                "updated_seq": "v.updated_seq",
                "verified_at": _KEEP_VERIFIED.format(new="v"),
            },
        )
        insert_rows(
            batch,
            blobs,
            list(self.blobs.rows.values()),
            targets,
            on_conflict="ON CONFLICT (sha256) DO NOTHING",
        )
        insert_rows(
            batch,
            storage_locations,
            list(self.locations.rows.values()),
            targets,
            on_conflict=(
                "ON CONFLICT (sha256, backend) DO UPDATE SET key = excluded.key,"
                " state = excluded.state, detail = excluded.detail,"
                " updated_at = excluded.updated_at, updated_seq = excluded.updated_seq,"
                f" verified_at = {_KEEP_VERIFIED.format(new='excluded')}"
            ),
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
