"""Alembic environment: runs migrations over asyncpg under an advisory lock.

The URL comes from the Alembic config attribute ``url`` (set by
``artifactstore.db.migrate``) or ``ARTIFACTSTORE_DATABASE_URL`` (developers
running ``uv run alembic``). Several processes may start at once against one
database (a server and CLI commands): the advisory lock makes the second wait
and then find nothing to do. Lock and statement timeouts keep a migration from
queueing behind long transactions forever.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from artifactstore.db.tables import metadata

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

MIGRATION_LOCK_ID = 0x41525446_4D494752  # "ARTFMIGR"

config = context.config
target_metadata = metadata


def _url() -> str:
    url = config.attributes.get("url") or os.environ.get("ARTIFACTSTORE_DATABASE_URL")
    if not url:
        msg = "no database URL: set ARTIFACTSTORE_DATABASE_URL"
        raise RuntimeError(msg)
    return str(url)


def _run(connection: Connection) -> None:
    connection.execute(sa.text("SET lock_timeout = '60s'"))
    connection.execute(sa.text("SET statement_timeout = '600s'"))
    connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK_ID)))
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url(), poolclass=sa.pool.NullPool)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
