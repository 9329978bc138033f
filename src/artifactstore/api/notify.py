"""Wake-ups for event followers: one LISTEN connection per process, many waiters.

``events.log.append`` sends ``NOTIFY artifactstore_events, '<seq>'`` inside
the appending transaction; PostgreSQL delivers it on commit, from any
process. Followers (the SSE stream) wait on ``wait_beyond`` and then read the
log itself - the notification only says "something new", the log says what.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from artifactstore.events.listen import LogListener
from artifactstore.events.log import NOTIFY_CHANNEL

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["EventNotifier"]

log = logging.getLogger("artifactstore.api")


class EventNotifier:
    """Tracks the newest seq announced and lets coroutines wait for a newer one."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.latest = 0
        self._changed = asyncio.Condition()
        self._listener = LogListener(engine, self._on_seq)

    async def start(self) -> None:
        """Open the listening connection (best effort: without it, followers poll)."""
        try:
            await self._listener.open()
        except Exception:  # noqa: BLE001 - degrade to polling, never fail startup for this
            log.warning("LISTEN %s unavailable; event stream will poll", NOTIFY_CHANNEL)

    async def restart(self) -> None:
        """Listen on a fresh connection (after the database restarted under us)."""
        await self.stop()
        await self.start()

    def _on_seq(self, seq: int) -> None:
        self.latest = max(self.latest, seq)
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_beyond(self, seq: int, timeout: float) -> None:  # noqa: ASYNC109 - a bounded wait is the API
        """Return when a seq above ``seq`` was announced, or after ``timeout`` seconds."""
        if self.latest > seq:
            return
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: self.latest > seq), timeout)

    async def stop(self) -> None:
        """Stop listening and return the connection."""
        await self._listener.close()
