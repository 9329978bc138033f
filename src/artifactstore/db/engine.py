"""Opening the registry's database: an external URL or the embedded cluster.

``open_database`` is the one way in: with ``database.url`` set it connects
there and checks the schema is current; without it, it starts (or joins) the
embedded cluster under the data dir and migrates it automatically (DESIGN
section 7). ``Database.aclose`` disposes the pool and releases the cluster.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from artifactstore.errors import DatabaseUnavailableError
from artifactstore.resources import AsyncCloseable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from artifactstore.config import Settings
    from artifactstore.db.embedded import EmbeddedPostgres

__all__ = ["Database", "create_engine", "open_database", "schema_is_current"]

POOL_SIZE = 10
CONNECT_TIMEOUT_SECONDS = 10
COMMAND_TIMEOUT_SECONDS = 60


def create_engine(
    url: str,
    *,
    pool_size: int = POOL_SIZE,
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    command_timeout: float = COMMAND_TIMEOUT_SECONDS,
) -> AsyncEngine:
    """An asyncpg engine sized for one process, whose every wait on the server ends.

    ``connect_timeout`` bounds opening a connection and ``command_timeout``
    each statement (asyncpg raises ``TimeoutError``), so a database that
    stops answering (a stopped or partitioned server) fails requests instead
    of holding them forever (``database.*_timeout_seconds``).

    No pre-ping: on asyncpg it costs three round trips per checkout
    (``BEGIN; ;  ROLLBACK``), a third of a small publish's. A connection
    that died meanwhile fails its statement instead; SQLAlchemy then
    recognises the disconnect and invalidates the whole pool, so the next
    checkout connects afresh.
    """
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+asyncpg://" + url.split("://", 1)[1]
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args={"timeout": connect_timeout, "command_timeout": command_timeout},
    )


@asynccontextmanager
async def autocommit(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A pooled connection in autocommit mode: each statement is its own transaction.

    For reads and single-statement writes on hot paths: no ``BEGIN`` and
    ``COMMIT``/``ROLLBACK`` round trips around the statement. Several
    statements are neither one snapshot nor atomic: use ``engine.begin()``
    (or a journal transaction) where that matters.
    """
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


async def schema_is_current(engine: AsyncEngine) -> bool:
    """True when the database is at the newest migration."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - only needed here

    from artifactstore.db.migrate import script_location  # noqa: PLC0415

    head = ScriptDirectory(str(script_location())).get_current_head()
    async with engine.connect() as conn:
        exists = await conn.scalar(sa.text("SELECT to_regclass('alembic_version') IS NOT NULL"))
        if not exists:
            return False
        current = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
    return bool(current == head)


@dataclass
class Database(AsyncCloseable):
    """An open engine, its URL, and the embedded cluster it holds (if any)."""

    engine: AsyncEngine
    url: str
    embedded: EmbeddedPostgres | None = None

    async def aclose(self) -> None:
        """Dispose the pool and release the embedded cluster (stopping it if last)."""
        await self.engine.dispose()
        if self.embedded is not None:
            self.embedded.release()
            self.embedded = None


async def open_database(settings: Settings, *, migrate: bool | None = None) -> Database:
    """Connect to the configured database, starting the embedded one if none is set.

    ``migrate`` defaults to True for the embedded cluster and False for an
    external server, whose schema must already be current
    (``artifactstore db upgrade``).

    Raises:
        DatabaseUnavailableError: unreachable, or the schema is behind.
    """
    from artifactstore.db.migrate import aupgrade  # noqa: PLC0415 - alembic loads lazily

    embedded: EmbeddedPostgres | None = None
    if settings.database.url:
        url = settings.database.url
    else:
        from artifactstore.db.embedded import EmbeddedPostgres  # noqa: PLC0415

        embedded = EmbeddedPostgres(settings.data_dir)
        url = embedded.start()
    do_migrate = (embedded is not None) if migrate is None else migrate
    engine = create_engine(
        url,
        connect_timeout=settings.database.connect_timeout_seconds,
        command_timeout=settings.database.command_timeout_seconds,
    )
    try:
        if do_migrate:
            await aupgrade(url)
        elif not await schema_is_current(engine):
            raise DatabaseUnavailableError(
                "the database schema is not current; run `artifactstore db upgrade`"
            )
    except OSError as exc:
        await engine.dispose()
        if embedded is not None:
            embedded.release()
        raise DatabaseUnavailableError(f"cannot reach the database: {exc}") from exc
    except BaseException:
        await engine.dispose()
        if embedded is not None:
            embedded.release()
        raise
    return Database(engine=engine, url=url, embedded=embedded)
