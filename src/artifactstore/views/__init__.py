"""Views: tables derived from the event log only, and how to rebuild them.

``apply`` folds one event into every view it touches and records the view's
position in ``view_positions`` in the same transaction, so a view's rows and
its position never disagree. ``replay`` empties every view and applies the
whole log again; the result must equal the live views (``snapshot`` compares).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from artifactstore.db.tables import VIEW_TABLES, view_positions
from artifactstore.events.log import Event, iter_events
from artifactstore.events.payloads import (
    BlobStored,
    LocationDeleted,
    LocationFailed,
    LocationMissing,
    LocationVerified,
    PackagePublished,
    PackageYanked,
    TokenCreated,
    TokenRevoked,
)
from artifactstore.views.blobs import LocationState, apply_blob_event, readable_copies
from artifactstore.views.packages import apply_package_event
from artifactstore.views.tokens import apply_token_event

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["LocationState", "apply", "apply_all", "readable_copies", "replay", "snapshot"]


async def apply(conn: AsyncConnection, event: Event) -> None:
    """Fold ``event`` into the views, in the caller's transaction."""
    data = event.data()
    match data:
        case (
            BlobStored()
            | LocationVerified()
            | LocationFailed()
            | LocationMissing()
            | (LocationDeleted())
        ):
            await apply_blob_event(conn, event, data)
            family = "blobs"
        case PackagePublished() | PackageYanked():
            await apply_package_event(conn, event, data)
            family = "packages"
        case TokenCreated() | TokenRevoked():
            await apply_token_event(conn, event, data)
            family = "tokens"
    stmt = insert(view_positions).values(view=family, last_seq=event.seq)
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=["view"], set_={"last_seq": event.seq})
    )


async def apply_all(conn: AsyncConnection, events: Sequence[Event]) -> None:
    """Apply several events in order."""
    for event in events:
        await apply(conn, event)


async def replay(conn: AsyncConnection) -> int:
    """Empty every view and rebuild it from the whole log; returns events applied.

    Runs in the caller's transaction: commit to keep the result. Readers see
    the old views until then.
    """
    for table in VIEW_TABLES:
        await conn.execute(sa.delete(table))
    count = 0
    async for event in iter_events(conn):
        await apply(conn, event)
        count += 1
    return count


async def snapshot(conn: AsyncConnection) -> dict[str, list[tuple[Any, ...]]]:
    """Every view's rows in primary-key order, for comparing two states of the views."""
    result: dict[str, list[tuple[Any, ...]]] = {}
    for table in VIEW_TABLES:
        order = list(table.primary_key.columns)
        rows = (await conn.execute(sa.select(table).order_by(*order))).all()
        result[table.name] = [tuple(r) for r in rows]
    return result
