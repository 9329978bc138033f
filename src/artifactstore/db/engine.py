"""Opening the registry's database: an external URL or the embedded cluster.

``open_database`` is the one way in: with ``database.url`` set it connects
there and checks the schema is current; without it, it starts (or joins) the
embedded cluster under the data dir and migrates it automatically (DESIGN
section 7). ``Database.aclose`` disposes the pool and releases the cluster.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from artifactstore.db.outage import connect_failure, database_outage
from artifactstore.errors import DatabaseUnavailableError
from artifactstore.resources import AsyncCloseable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from artifactstore.config import Settings
    from artifactstore.db.embedded import EmbeddedPostgres

__all__ = ["Database", "create_engine", "open_database", "schema_is_current"]

POOL_SIZE = 10
#: How long a request waits for a free pooled connection before a 503.
POOL_TIMEOUT_SECONDS = 30.0
#: How long one connect attempt may take (asyncpg's default is 60 s).
CONNECT_TIMEOUT_SECONDS = 10.0
#: How long one statement may take (``database.command_timeout_seconds``).
COMMAND_TIMEOUT_SECONDS = 60.0


def create_engine(
    url: str,
    *,
    pool_size: int = POOL_SIZE,
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    command_timeout: float = COMMAND_TIMEOUT_SECONDS,
) -> AsyncEngine:
    """An asyncpg engine sized for one process, that survives a database restart.

    Every wait on the server ends: ``connect_timeout`` bounds opening a
    connection and ``command_timeout`` each statement (asyncpg raises
    ``TimeoutError``), so a database that stops answering (a stopped or
    partitioned server) fails requests instead of holding them forever
    (``database.*_timeout_seconds``).

    No pre-ping: on asyncpg it costs three round trips per checkout
    (``BEGIN; ;  ROLLBACK``), a third of a small publish's. Instead a
    checkout looks, for free, whether the driver has seen its socket close
    (a server that stops or dies closes every session): such a connection,
    and every older one, is dropped and a fresh one connected. A connection
    that dies unnoticed fails its statement; SQLAlchemy then recognises the
    disconnect and invalidates the whole pool. A failed connect becomes a
    ``DBAPIError`` flagged ``connection_invalidated`` (``db.outage``), not a
    bare ``OSError``.
    """
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+asyncpg://" + url.split("://", 1)[1]
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        connect_args={"timeout": connect_timeout, "command_timeout": command_timeout},
    )
    sa.event.listen(engine.sync_engine, "do_connect", _connect)
    sa.event.listen(engine.sync_engine.pool, "checkout", _drop_closed)
    return engine


def _connect(dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
    try:
        return dialect.connect(*cargs, **cparams)
    except sa.exc.DBAPIError:
        raise
    except Exception as exc:
        if not connect_failure(exc):
            raise
        raise sa.exc.OperationalError(None, None, exc, connection_invalidated=True) from exc


def _drop_closed(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    driver = record.driver_connection
    if driver is not None and driver.is_closed():
        raise sa.exc.InvalidatePoolError("the database closed this connection")


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
    except BaseException as exc:
        await engine.dispose()
        if embedded is not None:
            embedded.release()
        if isinstance(exc, OSError) or (
            isinstance(exc, sa.exc.DBAPIError) and database_outage(exc) is not None
        ):
            raise DatabaseUnavailableError(f"cannot reach the database: {exc}") from exc
        raise
    return Database(engine=engine, url=url, embedded=embedded)
