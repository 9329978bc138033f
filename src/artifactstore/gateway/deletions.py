"""Tells the gateway's catalog when a version was deleted, on every replica.

The catalog caches file look-ups because a published version never
changes; a delete (DESIGN section 11) is the one thing that takes a file
away. Each process LISTENs on the event log's channel (``events.log``
NOTIFYs every append on commit, to every replica on the database): after
an announcement the next cache hit asks ``deleted_versions`` for deletions
past the last one seen, one indexed query per announcement, not per hit.
While the listening connection is down nobody can vouch for the cache, so
the catalog must not use it (``changed`` answers None).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from artifactstore.events.listen import LogListener
from artifactstore.events.log import NOTIFY_CHANNEL
from artifactstore.registry import queries

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["DeletionWatch"]

log = logging.getLogger("artifactstore.gateway")

CONNECT_SECONDS = 5.0
RETRY_SECONDS = 5.0


class DeletionWatch:
    """The newest seq announced and the newest deletion the catalog has seen."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.announced = 0
        self.synced = 0
        self._listener = LogListener(engine, self._on_seq)
        self._retry_at = 0.0
        self._wanted = False

    def _on_seq(self, seq: int) -> None:
        self.announced = max(self.announced, seq)

    async def start(self) -> None:
        """LISTEN, then start from the newest deletion (best effort: else the cache is off)."""
        self._wanted = True
        try:
            async with asyncio.timeout(CONNECT_SECONDS):
                await self._listener.open()
                async with self.engine.connect() as conn:
                    self.synced = await queries.last_deletion(conn)
        except Exception:  # noqa: BLE001 - degrade to no file cache, never fail a request
            log.warning("LISTEN %s unavailable; the gateway's file cache is off", NOTIFY_CHANNEL)
            await self._listener.close()

    async def stop(self) -> None:
        """Stop listening and return the connection (``start`` again to resume)."""
        self._wanted = False
        await self._listener.close()

    async def changed(self) -> bool | None:
        """True: versions were deleted since the last call (drop the cache); False: none.

        None: not listening (never started, or down after one attempt to listen
        again), so a cached file may be deleted; the caller must look it up.
        """
        if not self._listener.listening():
            if not self._wanted or time.monotonic() < self._retry_at:
                return None
            self._retry_at = time.monotonic() + RETRY_SECONDS
            await self.start()
            return None if not self._listener.listening() else True
        if self.announced <= self.synced:
            return False
        # NOTIFY is delivered on commit: every deletion up to ``announced`` is visible now.
        target = self.announced
        async with self.engine.connect() as conn:
            newest = await queries.last_deletion(conn)
        deleted = newest > self.synced
        self.synced = max(target, newest)
        return deleted
