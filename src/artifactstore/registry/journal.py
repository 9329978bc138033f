"""Journal transactions: append events and fold them into the views atomically.

The only place that joins ``events`` (the log) and ``views`` (its readers), so
neither package imports the other, and the only way the code takes the log
lock (``events.lock_log``, a row lock on ``log_head``). Every write of the registry is one
``async with transaction(engine, actor=...) as tx`` block; a read after it
returns sees the change (DESIGN section 2).

The lock lasts until COMMIT and serialises every appender on every replica,
so a transaction holds nothing else: callers validate, encode, hash, read
(possibly stale) rows and write storage *before* they open it, and do
inside it only the re-checks that must be atomic with the append (one
statement each, e.g. ``readable_copies``), the append and the view updates.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from artifactstore import views
from artifactstore.db.batch import StatementBatch
from artifactstore.events import LogHead, chain_events, lock_log, queue_append

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from artifactstore.events import BlobStored, Event, EventPayload

__all__ = ["JournalTransaction", "transaction"]


class JournalTransaction:
    """One open transaction holding the log lock: re-checks, then appends."""

    def __init__(self, conn: AsyncConnection, head: LogHead, actor: str) -> None:
        self.conn = conn
        self.actor = actor
        self._head = head

    async def record(self, *payloads: EventPayload) -> list[Event]:
        """Append ``payloads`` after the head and apply them to the views."""
        if not payloads:
            return []
        new = chain_events(self._head, payloads, actor=self.actor)
        # The insert and every view change go out as one statement (db.batch).
        batch = StatementBatch()
        queue_append(batch, new)
        fold = views.Fold()
        fold.extend(new)
        fold.collect(batch, {})
        await batch.run(self.conn)
        self._head = LogHead(new[-1].seq, new[-1].hash)
        return new

    async def record_copies(
        self, copies: Iterable[BlobStored], *, held: set[tuple[bytes, str]] | None = None
    ) -> list[BlobStored]:
        """Record each copy that no readable location records yet; return those recorded."""
        fresh = await self.fresh_copies(copies, held=held)
        await self.record(*fresh)
        return fresh

    async def fresh_copies(
        self, copies: Iterable[BlobStored], *, held: set[tuple[bytes, str]] | None = None
    ) -> list[BlobStored]:
        """The copies no readable location records yet (each once), to record in this transaction.

        The check runs under the lock, so two writers of one blob record its
        copy once: the loser's object is the same content-addressed object
        (it must never delete it), and its event is dropped here. ``held``
        passes the answer of a ``views.readable_copies`` made under this lock
        that covered every copy, saving the statement.
        """
        wanted = list(copies)
        if not wanted:
            return []
        if held is None:
            held = await views.readable_copies(self.conn, [(c.sha256, c.backend) for c in wanted])
        seen = set(held)
        fresh: list[BlobStored] = []
        for copy in wanted:
            if (copy.sha256, copy.backend) not in seen:
                seen.add((copy.sha256, copy.backend))
                fresh.append(copy)
        return fresh


@asynccontextmanager
async def transaction(engine: AsyncEngine, *, actor: str) -> AsyncIterator[JournalTransaction]:
    """Open a transaction, take the log lock, and commit what was recorded on exit.

    An exception inside the block rolls everything back: no event, no view
    change, no gap in ``seq``.
    """
    async with engine.begin() as conn:
        yield JournalTransaction(conn, await lock_log(conn), actor)
