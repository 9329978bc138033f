"""Schema migrations: ``alembic upgrade head`` from code, wherever the package lives.

The migration scripts are the repository's top-level ``alembic/`` folder; a
built wheel carries them as ``artifactstore/_alembic``. ``upgrade`` is
idempotent and safe to run from several processes at once (``alembic/env.py``
takes an advisory lock). Alembic's env drives asyncpg with ``asyncio.run``,
so the work runs on a private thread and ``upgrade`` may be called from inside
a running event loop too.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config

from artifactstore.errors import DatabaseUnavailableError

__all__ = ["aupgrade", "script_location", "upgrade"]


def script_location() -> Path:
    """The folder holding ``env.py`` and ``versions/``."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_alembic", here.parent.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise DatabaseUnavailableError("migration scripts not found; reinstall artifactstore")


def _config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (default: the newest schema).

    Raises:
        DatabaseUnavailableError: the database cannot be reached or migrated.
    """
    failure: list[BaseException] = []

    def run() -> None:
        try:
            command.upgrade(_config(url), revision)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=run, name="alembic-upgrade")
    worker.start()
    worker.join()
    if failure:
        exc = failure[0]
        if isinstance(exc, DatabaseUnavailableError):
            raise exc
        raise DatabaseUnavailableError(f"database migration failed: {exc}") from exc


async def aupgrade(url: str, revision: str = "head") -> None:
    """``upgrade`` without blocking the event loop."""
    await asyncio.to_thread(upgrade, url, revision)
