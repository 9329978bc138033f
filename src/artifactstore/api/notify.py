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
from typing import TYPE_CHECKING, Any

from artifactstore.events.log import NOTIFY_CHANNEL

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["EventNotifier"]

log = logging.getLogger("artifactstore.api")


class EventNotifier:
    """Tracks the newest seq announced and lets coroutines wait for a newer one."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.latest = 0
        self._changed = asyncio.Condition()
        self._conn: AsyncConnection | None = None
        self._driver: Any = None

    async def start(self) -> None:
        """Open the listening connection (best effort: without it, followers poll)."""
        try:
            self._conn = await self.engine.connect()
            raw = await self._conn.get_raw_connection()
            self._driver = raw.driver_connection
            await self._driver.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except Exception:  # noqa: BLE001 - degrade to polling, never fail startup for this
            log.warning("LISTEN %s unavailable; event stream will poll", NOTIFY_CHANNEL)
            await self.stop()

    async def restart(self) -> None:
        """Listen on a fresh connection (after the database restarted under us)."""
        await self.stop()
        await self.start()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        with contextlib.suppress(ValueError):
            self.latest = max(self.latest, int(payload))
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
        if self._driver is not None:
            with contextlib.suppress(Exception):
                await self._driver.remove_listener(NOTIFY_CHANNEL, self._on_notify)
            self._driver = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None
