"""One LISTEN connection on the event log's channel, for each process that follows appends.

``events.log.append`` NOTIFYs ``artifactstore_events`` with the new seq on
commit, to every process on the database. The REST API's event stream
(``api.notify``) and the gateway's deletion watch (``gateway.deletions``)
each hold one of these; they differ only in what an announcement wakes.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from artifactstore.events.log import NOTIFY_CHANNEL

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["LogListener"]


class LogListener:
    """Calls ``on_seq`` with each seq announced while open."""

    def __init__(self, engine: AsyncEngine, on_seq: Callable[[int], None]) -> None:
        self.engine = engine
        self.on_seq = on_seq
        self._conn: AsyncConnection | None = None
        self._driver: Any = None

    def listening(self) -> bool:
        """Whether announcements arrive (the connection is up)."""
        return self._driver is not None and not self._driver.is_closed()

    async def open(self) -> None:
        """LISTEN on a connection of the engine's pool (raises what connecting raises)."""
        await self.close()
        try:
            self._conn = await self.engine.connect()
            raw = await self._conn.get_raw_connection()
            self._driver = raw.driver_connection
            await self._driver.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop listening and return the connection."""
        if self._driver is not None:
            with contextlib.suppress(Exception):
                await self._driver.remove_listener(NOTIFY_CHANNEL, self._on_notify)
            self._driver = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        with contextlib.suppress(ValueError):
            self.on_seq(int(payload))
