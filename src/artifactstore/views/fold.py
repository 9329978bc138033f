"""The one fold of events into the views, for live appends and for replay alike.

``Fold`` takes events in log order, keeps each family's pending changes in
Python (several events on one key merge there, in order) and ``flush``
writes them with a few multi-row statements per table, then moves each
family's ``view_positions`` row to its newest seq. The journal folds one
transaction's events through it (``collect``: sent with the event insert as
one statement); ``fold_log`` reads the log in bounded batches through it
(replay, into live or shadow tables), so the two paths cannot diverge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from artifactstore.db.batch import StatementBatch, insert_rows
from artifactstore.db.tables import view_positions
from artifactstore.events import payloads as p
from artifactstore.events.log import fetch_events
from artifactstore.views.blobs import BlobFold
from artifactstore.views.packages import PackageFold
from artifactstore.views.tokens import TokenFold

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping

    from sqlalchemy.ext.asyncio import AsyncConnection

    from artifactstore.events.log import Event

__all__ = ["FOLD_BATCH", "Fold", "fold_log"]

FOLD_BATCH = 20_000
"""Events read and folded per batch by ``fold_log``: bounds memory and statement size."""


class Fold:
    """Pending view changes of a batch of events, written by ``flush``."""

    def __init__(self) -> None:
        self.blobs = BlobFold()
        self.packages = PackageFold()
        self.tokens = TokenFold()
        self.positions: dict[str, int] = {}

    def add(self, event: Event) -> None:
        """Fold ``event`` (the next in log order) into the pending changes."""
        data = event.data(trusted=True)
        match data:
            case (
                p.BlobStored()
                | p.LocationVerified()
                | p.LocationFailed()
                | p.LocationMissing()
                | p.LocationDeleted()
            ):
                self.blobs.add(event, data)
                family = "blobs"
            case p.PackagePublished() | p.PackageYanked() | p.PackageDeleted():
                self.packages.add(event, data)
                family = "packages"
            case p.TokenCreated() | p.TokenRevoked():
                self.tokens.add(event, data)
                family = "tokens"
        self.positions[family] = event.seq

    def extend(self, events: Iterable[Event]) -> None:
        """``add`` each of ``events`` in order."""
        for event in events:
            self.add(event)

    async def flush(self, conn: AsyncConnection, targets: Mapping[str, str]) -> None:
        """Write every pending change to the tables ``targets`` names (default: live)."""
        batch = StatementBatch()
        self.collect(batch, targets)
        await batch.run(conn)

    def collect(self, batch: StatementBatch, targets: Mapping[str, str]) -> None:
        """Queue the statements that write every pending change (see ``flush``)."""
        self.blobs.collect(batch, targets)
        self.packages.collect(batch, targets)
        self.tokens.collect(batch, targets)
        insert_rows(
            batch,
            view_positions,
            [{"view": view, "last_seq": seq} for view, seq in self.positions.items()],
            targets,
            on_conflict="ON CONFLICT (view) DO UPDATE SET last_seq = excluded.last_seq",
        )


async def fold_log(
    conn: AsyncConnection,
    targets: Mapping[str, str],
    *,
    after: int,
    until: int | None = None,
    batch: int = FOLD_BATCH,
    progress: Callable[[int], Awaitable[None]] | None = None,
) -> int:
    """Fold the events ``after < seq <= until`` (or to the end) in batches; return the last seq.

    Memory stays bounded by ``batch`` events and their rows, whatever the
    length of the log. ``progress`` is awaited after each batch with the
    last seq folded (the online replay's tests pause there).
    """
    position = after
    while until is None or position < until:
        limit = batch if until is None else min(batch, until - position)
        page = await fetch_events(conn, after=position, limit=limit)
        if not page:
            break
        fold = Fold()
        fold.extend(page)
        await fold.flush(conn, targets)
        position = page[-1].seq
        if progress is not None:
            await progress(position)
        if len(page) < limit:
            break
    return position
