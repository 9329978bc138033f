"""Views: tables derived from the event log only, and how to rebuild them.

``Fold`` folds events into every view they touch and records each view's
position in ``view_positions`` in the same statements, so a view's rows and
its position never disagree; the journal (``registry/journal.py``) sends a
transaction's fold with its event insert as one statement. ``replay`` empties every
view and folds the whole log again in the caller's transaction; the online
rebuild beside live writers is ``registry.rebuild``. Both go through the one
batch fold (``views.fold``). ``snapshot`` compares two states of the views.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from artifactstore.db.tables import VIEW_TABLES
from artifactstore.views.blobs import LocationState, readable_copies
from artifactstore.views.fold import FOLD_BATCH, Fold, fold_log

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = [
    "FOLD_BATCH",
    "Fold",
    "LocationState",
    "fold_log",
    "readable_copies",
    "replay",
    "snapshot",
]


async def replay(conn: AsyncConnection) -> int:
    """Empty every view and rebuild it from the whole log; returns the events applied.

    Runs in the caller's transaction: commit to keep the result. Readers see
    the old views until then; appenders are not held back, so the caller
    takes the log lock if events may land meanwhile (``registry.rebuild``
    rebuilds beside live writers instead).
    """
    for table in VIEW_TABLES:
        await conn.execute(sa.delete(table))
    return await fold_log(conn, {}, after=0)  # seq is gapless from 1: the last is the count


async def snapshot(conn: AsyncConnection) -> dict[str, list[tuple[Any, ...]]]:
    """Every view's rows in primary-key order, for comparing two states of the views."""
    result: dict[str, list[tuple[Any, ...]]] = {}
    for table in VIEW_TABLES:
        order = list(table.primary_key.columns)
        rows = (await conn.execute(sa.select(table).order_by(*order))).all()
        result[table.name] = [tuple(r) for r in rows]
    return result
