"""Chain verification: re-derive every link of the event log, fast.

``verify_chain`` reads the log in large keyset pages of raw tuples (only
the columns a link needs, straight from the asyncpg driver, no per-row
SQLAlchemy objects) inside the caller's transaction, so under REPEATABLE
READ it checks one consistent snapshot while appends go on. It hashes with
blake3 (``chain_hash``'s definition, inlined) and names the first bad seq.
It does not repair anything, and it reads nothing but the ``events`` table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import blake3

from artifactstore.errors import ChainBrokenError
from artifactstore.events.log import GENESIS_HASH, driver_of

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["VERIFY_PAGE", "ChainReport", "verify_chain"]

VERIFY_PAGE = 50_000
"""Events per keyset page: large enough that round trips do not count."""

_PAGE_SQL = (
    "SELECT seq, convert_to(type, 'UTF8'), payload, prev_hash, hash FROM events"
    " WHERE seq > $1 ORDER BY seq LIMIT $2"
)


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The result of a successful chain verification."""

    count: int
    head_seq: int
    head_hash: bytes


async def verify_chain(conn: AsyncConnection, *, page: int = VERIFY_PAGE) -> ChainReport:
    """Re-derive every link of the chain from the stored rows.

    Checks, per event: ``seq`` follows the previous one with no gap,
    ``prev_hash`` equals the previous event's ``hash``, and ``hash`` equals
    ``blake3(prev_hash || type || payload)`` of the stored columns. Runs in
    the caller's transaction: open it REPEATABLE READ for one snapshot.

    Raises:
        ChainBrokenError: at the first event that fails; ``detail["seq"]`` names it.
    """
    driver = await driver_of(conn)
    statement = await driver.prepare(_PAGE_SQL)
    hasher = blake3.blake3
    expected = 1
    prev = GENESIS_HASH
    while True:
        rows = await statement.fetch(expected - 1, page)
        for seq, event_type, payload, prev_hash, digest in rows:
            if seq != expected:
                raise ChainBrokenError(
                    f"event log has a gap: expected seq {expected}, found {seq}", seq=expected
                )
            if prev_hash != prev:
                raise ChainBrokenError(
                    f"seq {seq}: prev_hash does not match the hash of seq {seq - 1}", seq=seq
                )
            if hasher(prev + event_type + payload).digest() != digest:
                raise ChainBrokenError(
                    f"seq {seq}: hash does not match its type and payload (edited row)", seq=seq
                )
            prev = digest
            expected += 1
        if len(rows) < page:
            break
    return ChainReport(count=expected - 1, head_seq=expected - 1, head_hash=bytes(prev))
