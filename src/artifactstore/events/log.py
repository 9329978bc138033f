"""The append-only event log: hash chain, append, reading and chain verification.

Requirements (DESIGN section 2), in the order the code keeps them:

1. Append-only: the code never updates or deletes an event row, and a
   trigger makes the database refuse it too (migration 0001).
2. Gapless and linear: ``seq`` is 1, 2, 3, ... and each event's
   ``prev_hash`` is the previous event's ``hash``, even with several
   processes appending at once (see ``lock_log``).
3. Tamper-evident: ``hash = blake3(prev_hash || type || payload)``; the first
   ``prev_hash`` is 32 zero bytes. ``verify_chain`` names the first bad seq.
4. Atomic with the views: ``append`` runs in the caller's transaction, so
   the caller applies the new events to the views before it commits.

Every insert also ``NOTIFY artifactstore_events`` (the trigger of migration
0004 sends it; delivered on commit) so followers such as the SSE stream wake
up without polling.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import blake3
import sqlalchemy as sa

from artifactstore.db.tables import events, log_head
from artifactstore.errors import ChainBrokenError
from artifactstore.events.payloads import EventPayload, decode_payload

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection

    from artifactstore.events.types import EventType

__all__ = [
    "GENESIS_HASH",
    "NOTIFY_CHANNEL",
    "ChainReport",
    "Event",
    "LogHead",
    "append",
    "chain_events",
    "chain_hash",
    "iter_events",
    "last_seq",
    "lock_log",
    "read_events",
    "verify_chain",
]

GENESIS_HASH = bytes(32)
NOTIFY_CHANNEL = "artifactstore_events"
_VERIFY_BATCH = 5000


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

    def data(self) -> EventPayload:
        """The decoded payload dataclass (raises ``IntegrityError`` if malformed)."""
        return decode_payload(self.type, self.payload)

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
            )
        )
        prev = digest
    return chained


async def append(
    conn: AsyncConnection, head: LogHead, payloads: Sequence[EventPayload], *, actor: str
) -> list[Event]:
    """Insert events after ``head`` in the caller's transaction; return them with seq and hash.

    ``head`` must come from ``lock_log`` in this transaction (or from the
    previous append in it). The caller commits after applying the events to
    the views; nothing is visible to others before that, and a rollback
    leaves no gap.
    """
    appended = chain_events(head, payloads, actor=actor)
    if appended:
        await conn.execute(
            events.insert(),
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
        )
    return appended


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


async def iter_events(
    conn: AsyncConnection, *, after: int = 0, batch: int = _VERIFY_BATCH
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


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The result of a successful chain verification."""

    count: int
    head_seq: int
    head_hash: bytes


async def verify_chain(conn: AsyncConnection) -> ChainReport:
    """Re-derive every link of the chain from the stored rows.

    Checks, per event: ``seq`` follows the previous one with no gap,
    ``prev_hash`` equals the previous event's ``hash``, and ``hash`` equals
    ``blake3(prev_hash || type || payload)`` of the stored columns.

    Raises:
        ChainBrokenError: at the first event that fails; ``detail["seq"]`` names it.
    """
    expected_seq = 1
    prev = GENESIS_HASH
    count = 0
    async for event in iter_events(conn):
        if event.seq != expected_seq:
            raise ChainBrokenError(
                f"event log has a gap: expected seq {expected_seq}, found {event.seq}",
                seq=expected_seq,
            )
        if event.prev_hash != prev:
            raise ChainBrokenError(
                f"seq {event.seq}: prev_hash does not match the hash of seq {event.seq - 1}",
                seq=event.seq,
            )
        if chain_hash(event.prev_hash, event.type, event.payload) != event.hash:
            raise ChainBrokenError(
                f"seq {event.seq}: hash does not match its type and payload (edited row)",
                seq=event.seq,
            )
        prev = event.hash
        expected_seq += 1
        count += 1
    return ChainReport(count=count, head_seq=expected_seq - 1, head_hash=prev)
