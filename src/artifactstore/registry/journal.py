"""Recording: append events and fold them into the views in one transaction.

The only place that joins ``events`` (the log) and ``views`` (its readers), so
neither package imports the other. Every write of the registry goes through
``record``; a read after it returns sees the change (DESIGN section 2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from artifactstore import views
from artifactstore.events import append

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection

    from artifactstore.events import Event, EventPayload

__all__ = ["record"]


async def record(
    conn: AsyncConnection, payloads: Sequence[EventPayload], *, actor: str
) -> list[Event]:
    """Append ``payloads`` and apply them to the views, in the caller's transaction."""
    appended = await append(conn, payloads, actor=actor)
    await views.apply_all(conn, appended)
    return appended
