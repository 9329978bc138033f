"""Bringing the embedded PostgreSQL back when its postmaster dies under a running server.

A killed postmaster (OOM killer, ``kill -9``, a crash) takes every session
with it; until something starts it again every request answers 503
(``db.outage``). ``Supervisor.run`` is the server's background task for the
embedded cluster only: once a second it checks that ``postmaster.pid``
names a live postmaster of our PGDATA (two small file reads, no
connection); when not, it restarts the cluster through
``EmbeddedPostgres.revive`` (``pg_ctl`` under the cluster's control lock, so
a CLI process reviving it at the same moment starts no second one), retrying
with exponential backoff (1 s doubling to 30 s) and logging each attempt.
After a restart it drops the pool's connections to the dead server and calls
``on_revived`` (the event notifier listens again).

An external database (``database.url``) is not supervised: somebody else runs
it, and the engine reconnects by itself when it returns (``db.engine``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import TYPE_CHECKING, Final

from artifactstore.errors import DatabaseUnavailableError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy.ext.asyncio import AsyncEngine

    from artifactstore.db.embedded import EmbeddedPostgres

__all__ = ["BACKOFF_MAX_SECONDS", "CHECK_SECONDS", "Supervisor"]

log = logging.getLogger("artifactstore.db.supervisor")

#: How often the postmaster's pid is checked.
CHECK_SECONDS: Final = 1.0
#: Wait after the first failed restart; it doubles after each failure...
BACKOFF_FIRST_SECONDS: Final = 1.0
#: ...up to this.
BACKOFF_MAX_SECONDS: Final = 30.0


class Supervisor:
    """Watches one embedded cluster for a dead postmaster and restarts it."""

    def __init__(
        self,
        embedded: EmbeddedPostgres,
        engine: AsyncEngine,
        *,
        on_revived: Callable[[], Awaitable[None]] | None = None,
        check_seconds: float = CHECK_SECONDS,
    ) -> None:
        self.embedded = embedded
        self.engine = engine
        self.on_revived = on_revived
        self.check_seconds = check_seconds

    async def run(self) -> None:
        """Check, restart when needed; until cancelled. Never raises otherwise."""
        while True:
            await asyncio.sleep(self.check_seconds)
            try:
                running = await asyncio.to_thread(self.embedded.is_running)
            except OSError as exc:  # an unreadable postmaster.pid: look again later
                log.warning("cannot check the embedded PostgreSQL: %s", exc)
                continue
            if not running:
                await self.restore()

    async def restore(self) -> None:
        """Restart the cluster, retrying with backoff until it runs; then refresh the pool."""
        log.warning(
            "the embedded PostgreSQL in %s is not running (postmaster gone); restarting it",
            self.embedded.pgdata,
        )
        delay = BACKOFF_FIRST_SECONDS
        for attempt in itertools.count(1):
            try:
                started = await asyncio.to_thread(self.embedded.revive)
            except DatabaseUnavailableError as exc:
                log.warning(
                    "restart attempt %d of the embedded PostgreSQL failed: %s; next in %.0f s",
                    attempt,
                    exc.message,
                    delay,
                )
            except Exception:
                log.exception(
                    "restart attempt %d of the embedded PostgreSQL failed; next in %.0f s",
                    attempt,
                    delay,
                )
            else:
                log.warning(
                    "the embedded PostgreSQL is running again (pid %s, %s, attempt %d)",
                    self.embedded.postmaster_pid(),
                    "restarted by this server" if started else "restarted by another process",
                    attempt,
                )
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)
        # Every pooled connection went to the dead server: drop them all now
        # rather than one failed checkout at a time.
        await self.engine.dispose()
        if self.on_revived is not None:
            try:
                await self.on_revived()
            except Exception:
                log.exception("after the restart of the embedded PostgreSQL")
