"""``artifactstore db upgrade``, and how CLI commands open the database directly.

Some commands work on the database itself rather than through the server
(``db upgrade``, ``events verify|replay``, ``token create|list|revoke``). They
read configuration like the server does (``--config``, else
``ARTIFACTSTORE_CONFIG``; ``ARTIFACTSTORE_DATABASE_URL`` and
``ARTIFACTSTORE_DATA_DIR`` override) and open the configured database, or the
embedded cluster under the data dir when none is configured. ``database()``
is that shared way in; it owns nothing else.

SQLAlchemy and the registry are imported inside the commands that use them,
so the client commands (upload, download, ls) start without loading them.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from artifactstore.config import ENV_CONFIG, load_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from artifactstore.db.engine import Database

__all__ = ["ConfigOption", "app", "database", "redact_url"]

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="FILE",
        help=f"artifactstore.toml (or {ENV_CONFIG}); default: the embedded database.",
        show_default=False,
    ),
]

app = typer.Typer(help="Database maintenance.", no_args_is_help=True)


def redact_url(url: str) -> str:
    """The database URL with any password hidden."""
    import sqlalchemy as sa  # noqa: PLC0415 - imported on use (module docstring)
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ValueError, sa.exc.ArgumentError):
        return "<unparseable database URL>"


@contextlib.asynccontextmanager
async def database(config: Path | None, *, migrate: bool | None = None) -> AsyncIterator[Database]:
    """The configured (or embedded) database, closed on exit.

    Raises:
        ConfigError: bad configuration.
        DatabaseUnavailableError: unreachable, or its schema is behind
            (run ``artifactstore db upgrade``).
    """
    from artifactstore.db.engine import open_database  # noqa: PLC0415 - imported on use

    db = await open_database(load_settings(config), migrate=migrate)
    try:
        yield db
    finally:
        await db.aclose()


@app.command("upgrade")
def upgrade_command(config: ConfigOption = None) -> None:
    """Migrate the configured database (or the embedded one) to the newest schema.

    Idempotent: a current database is left as it is.
    """
    import sqlalchemy as sa  # noqa: PLC0415 - imported on use (module docstring)

    async def run() -> tuple[str, str]:
        async with database(config, migrate=True) as db, db.engine.connect() as conn:
            revision = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
            return db.url, str(revision)

    url, revision = asyncio.run(run())
    print(f"database {redact_url(url)} is at schema revision {revision}")
