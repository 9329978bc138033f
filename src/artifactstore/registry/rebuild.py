"""Online replay: rebuild every view from the log while writers keep appending.

``rebuild_views`` runs in one transaction on one connection
(docs/design/0003-online-replay.md has the argument):

1. ``pg_try_advisory_xact_lock``: one replay at a time; a second one fails
   at once with ``ReplayInProgressError``.
2. Shadow tables ``<view>_replay`` for every table of ``VIEW_TABLES``
   (``db.shadow``), leftovers dropped first.
3. Fold the log into the shadows (``views.fold_log``, bounded batches) up
   to the head seen at the start, then catch up with the events appended
   meanwhile, round after round, without any lock that blocks writers.
4. When the lag is small (or after ``MAX_ROUNDS``), take the log lock
   (``events.lock_log``), fold the last events, and swap the shadows in
   (``db.shadow.swap``); commit releases the lock. Writers wait only for
   this last step. With ``check``, compare instead of swapping and roll
   back.

A crash or kill at any point before the commit rolls back everything: the
live views are untouched and the shadows vanish with the transaction.
This module does not decide how views fold events (``views.fold``) nor how
tables are swapped (``db.shadow``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from artifactstore.db import shadow
from artifactstore.db.tables import VIEW_TABLES
from artifactstore.errors import ReplayInProgressError, ViewsBusyError
from artifactstore.events import last_seq, lock_log
from artifactstore.views import FOLD_BATCH, fold_log

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["ADVISORY_LOCK", "MAX_ROUNDS", "SMALL_LAG", "RebuildReport", "rebuild_views"]

ADVISORY_LOCK = 0x61727469_66616374  # "artifact": the replay's pg advisory lock key
MAX_ROUNDS = 20
"""Catch-up rounds without the lock before the locked one, even if writers keep up."""
SMALL_LAG = 2_000
"""Events behind the head at which the locked catch-up starts (a fraction of a second)."""
SWAP_LOCK_TIMEOUT = "2s"
"""How long the swap waits for a reader's lock on a view before the replay gives up."""
_LOCK_NOT_AVAILABLE = "55P03"


@dataclass(frozen=True, slots=True)
class RebuildReport:
    """What a rebuild did: events folded, rounds, and the part under the log lock."""

    events: int
    rounds: int
    locked_events: int
    locked_seconds: float
    differ: list[str] = field(default_factory=list)


async def _catch_up(
    conn: AsyncConnection,
    targets: dict[str, str],
    batch: int,
    progress: Callable[[int], Awaitable[None]] | None,
) -> tuple[int, int]:
    """Fold into the shadows without the lock until the lag is small; (position, rounds)."""
    position, rounds = 0, 0
    while True:
        head = await last_seq(conn)
        if rounds and (head - position <= SMALL_LAG or rounds >= MAX_ROUNDS):
            return position, rounds
        position = await fold_log(
            conn, targets, after=position, until=head, batch=batch, progress=progress
        )
        rounds += 1


async def _swap(conn: AsyncConnection) -> None:
    """Swap the shadows in, waiting at most ``SWAP_LOCK_TIMEOUT`` for readers of the views."""
    await conn.execute(sa.text(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'"))
    try:
        await shadow.swap(conn, VIEW_TABLES)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
            raise
        raise ViewsBusyError(
            f"a reader held a view table for more than {SWAP_LOCK_TIMEOUT};"
            " nothing changed, run the replay again"
        ) from exc


async def rebuild_views(
    engine: AsyncEngine,
    *,
    check: bool = False,
    batch: int = FOLD_BATCH,
    progress: Callable[[int], Awaitable[None]] | None = None,
) -> RebuildReport:
    """Rebuild every view from the whole log beside live writers; swap unless ``check``.

    ``progress`` is awaited after each batch folded without the lock, with
    the last seq folded. With ``check`` the report's ``differ`` names the
    views whose rows differ from the rebuilt ones and nothing changes.

    Raises:
        ReplayInProgressError: another replay holds the advisory lock.
        ViewsBusyError: a reader held a view longer than ``SWAP_LOCK_TIMEOUT``
            at the swap (everything rolled back).
    """
    async with engine.connect() as conn:
        tx = await conn.begin()
        try:
            if not await conn.scalar(
                sa.text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK}
            ):
                raise ReplayInProgressError("another replay of the views is running")
            targets = await shadow.create_shadows(conn, VIEW_TABLES)
            position, rounds = await _catch_up(conn, targets, batch, progress)
            await shadow.analyze(conn, VIEW_TABLES)
            head = await lock_log(conn)
            locked_at = time.monotonic()
            await fold_log(conn, targets, after=position, until=head.seq, batch=batch)
            differ: list[str] = []
            if check:
                differ = await shadow.differing(conn, VIEW_TABLES)
                await tx.rollback()
            else:
                await _swap(conn)
                await tx.commit()
            locked = time.monotonic() - locked_at
        finally:
            if tx.is_active:
                await tx.rollback()
        if not check:
            # The old tables' files go now, without the log lock (db.shadow).
            async with conn.begin():
                await shadow.drop_retired(conn, VIEW_TABLES)
    return RebuildReport(
        events=head.seq,
        rounds=rounds,
        locked_events=head.seq - position,
        locked_seconds=locked,
        differ=differ,
    )
