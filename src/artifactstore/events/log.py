"""The append-only event log: hash chain, append, reading and chain verification.

Requirements (DESIGN section 2), in the order the code keeps them:

1. Append-only: the code never updates or deletes an event row, and a
   trigger makes the database refuse it too (migration 0001).
2. Gapless and linear: ``seq`` is 1, 2, 3, ... and each event's
   ``prev_hash`` is the previous event's ``hash``, even with several
   processes appending at once (see ``lock_log``).
3. Tamper-evident: ``hash = blake3(prev_hash || type || payload)``; the first
   ``prev_hash`` is 32 zero bytes. ``events.verify.verify_chain`` names the
   first bad seq.
4. Atomic with the views: ``queue_append`` queues the insert in the
   caller's batch, which holds the view changes of the same events too, and
   runs in the caller's transaction.

Every insert also ``NOTIFY artifactstore_events`` (the trigger of migration
0004 sends it; delivered on commit) so followers such as the SSE stream wake
up without polling.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import blake3
import sqlalchemy as sa

from artifactstore.db.batch import insert_rows
from artifactstore.db.tables import events, log_head
from artifactstore.events.payloads import EventPayload, decode_payload

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection

    from artifactstore.db.batch import StatementBatch
    from artifactstore.events.types import EventType

__all__ = [
    "GENESIS_HASH",
    "NOTIFY_CHANNEL",
    "Event",
    "LogHead",
    "chain_events",
    "chain_hash",
    "driver_of",
    "fetch_events",
    "iter_events",
    "last_seq",
    "lock_log",
    "queue_append",
    "read_events",
]

GENESIS_HASH = bytes(32)
NOTIFY_CHANNEL = "artifactstore_events"
_READ_BATCH = 5000


def chain_hash(prev_hash: bytes, event_type: str, payload: bytes) -> bytes:
    """``blake3(prev_hash || type || payload)``, the link of the chain."""
    h = blake3.blake3(prev_hash)
    h.update(event_type.encode("utf-8"))
    h.update(payload)
    return h.digest()


@dataclass(frozen=True, slots=True)
class Event:
    """One row of the log."""

    seq: int
    id: uuid.UUID
    type: str
    occurred_at: datetime
    actor: str
    payload: bytes
    prev_hash: bytes
    hash: bytes
    decoded: EventPayload | None = field(default=None, compare=False, repr=False)
    """The payload object an appender built this event from (saves decoding it again)."""

    def data(self, *, trusted: bool = False) -> EventPayload:
        """The decoded payload dataclass (raises ``IntegrityError`` if malformed).

        ``trusted`` skips the canonical-form check, for folding rows of the
        log (see ``decode_payload``).
        """
        if self.decoded is not None:
            return self.decoded
        return decode_payload(self.type, self.payload, trusted=trusted)

    @classmethod
    def from_row(cls, m: sa.RowMapping) -> Event:
        """Build from a row of the ``events`` table (as a mapping)."""
        return cls(
            seq=m["seq"],
            id=m["id"],
            type=m["type"],
            occurred_at=m["occurred_at"],
            actor=m["actor"],
            payload=bytes(m["payload"]),
            prev_hash=bytes(m["prev_hash"]),
            hash=bytes(m["hash"]),
        )


@dataclass(frozen=True, slots=True)
class LogHead:
    """The newest event's ``seq`` and ``hash`` (0 and ``GENESIS_HASH`` for an empty log)."""

    seq: int
    hash: bytes


async def lock_log(conn: AsyncConnection) -> LogHead:
    """Serialise appenders until the caller's transaction ends; return the current head.

    The only statement in the code base that takes the log lock; callers
    reach it through ``registry.journal.transaction`` (and the swap of an
    online replay).

    Why one row lock: with concurrent transactions, a sequence or
    ``max(seq)+1`` lets commit order differ from insert order, which leaves
    gaps (rolled-back sequence values) and forks the chain (two appenders
    reading the same head). Appenders instead lock the one row of
    ``log_head``; readers are never blocked. Under READ COMMITTED a waiter
    that gets the lock reads the row as the previous appender committed it
    (PostgreSQL re-checks a locked row's newest version), so locking and
    reading the head are one round trip. A trigger on ``events`` (migration
    0004) moves the head on every insert, refuses rows that do not continue
    it, and sends the NOTIFY. The lock is the same idea as eventsourcing's
    PostgreSQL recorder (``LOCK TABLE``), see
    https://www.postgresql.org/docs/current/transaction-iso.html#XACT-READ-COMMITTED.
    """
    row = (
        await conn.execute(
            sa.select(log_head.c.seq, log_head.c.hash).where(log_head.c.id == 1).with_for_update()
        )
    ).one()
    return LogHead(int(row.seq), bytes(row.hash))


def chain_events(
    head: LogHead, payloads: Sequence[EventPayload], *, actor: str, at: datetime | None = None
) -> list[Event]:
    """The events that extend the chain at ``head`` with ``payloads`` (no I/O)."""
    now = at or datetime.now(UTC)
    seq, prev = head.seq, head.hash
    chained: list[Event] = []
    for payload in payloads:
        seq += 1
        body = payload.to_cbor()
        event_type = str(payload.TYPE)
        digest = chain_hash(prev, event_type, body)
        chained.append(
            Event(
                seq=seq,
                id=uuid.uuid4(),
                type=event_type,
                occurred_at=now,
                actor=actor,
                payload=body,
                prev_hash=prev,
                hash=digest,
                decoded=payload,
            )
        )
        prev = digest
    return chained


def queue_append(batch: StatementBatch, appended: Sequence[Event]) -> None:
    """Queue the insert of ``appended`` (from ``chain_events`` at a locked head) into ``batch``.

    The caller runs the batch in the transaction that took ``lock_log``,
    with the view changes of the same events, and commits; nothing is
    visible to others before that, and a rollback leaves no gap.
    """
    insert_rows(
        batch,
        events,
        [
            {
                "seq": e.seq,
                "id": e.id,
                "type": e.type,
                "occurred_at": e.occurred_at,
                "actor": e.actor,
                "payload": e.payload,
                "prev_hash": e.prev_hash,
                "hash": e.hash,
            }
            for e in appended
        ],
        {},
    )


async def last_seq(conn: AsyncConnection) -> int:
    """The newest committed seq, 0 for an empty log."""
    value = await conn.scalar(sa.select(sa.func.coalesce(sa.func.max(events.c.seq), 0)))
    return int(value or 0)


async def read_events(
    conn: AsyncConnection,
    *,
    after: int = 0,
    limit: int = 100,
    types: Sequence[EventType] | None = None,
) -> list[Event]:
    """Up to ``limit`` events with ``seq > after``, oldest first."""
    query = sa.select(events).where(events.c.seq > after).order_by(events.c.seq).limit(limit)
    if types:
        query = query.where(events.c.type.in_([str(t) for t in types]))
    rows = (await conn.execute(query)).mappings().all()
    return [Event.from_row(r) for r in rows]


_PAGE_SQL = (
    "SELECT seq, id, type, occurred_at, actor, payload, prev_hash, hash FROM events"
    " WHERE seq > $1 ORDER BY seq LIMIT $2"
)


async def driver_of(conn: AsyncConnection) -> Any:
    """The asyncpg connection under ``conn``, with the caller's transaction (and snapshot) begun.

    For reading the log in pages of raw tuples: at hundreds of thousands of
    rows, SQLAlchemy's per-row objects cost more than the query.
    """
    await conn.execute(sa.select(1))
    raw = await conn.get_raw_connection()
    return raw.driver_connection


async def fetch_events(conn: AsyncConnection, *, after: int, limit: int) -> list[Event]:
    """``read_events`` without types, through the driver: for folding long stretches of the log."""
    driver = await driver_of(conn)
    return [Event(*row) for row in await driver.fetch(_PAGE_SQL, after, limit)]


async def iter_events(
    conn: AsyncConnection, *, after: int = 0, batch: int = _READ_BATCH
) -> AsyncIterator[Event]:
    """Every event with ``seq > after`` in order, fetched in keyset batches (bounded memory)."""
    position = after
    while True:
        page = await read_events(conn, after=position, limit=batch)
        for event in page:
            yield event
        if len(page) < batch:
            return
        position = page[-1].seq
