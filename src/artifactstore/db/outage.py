"""Recognising "the database is away": the one classification every edge uses.

A PostgreSQL server that was killed, is restarting, or is unreachable shows
up as many different exceptions, depending on where the request was when it
noticed: SQLAlchemy's ``DBAPIError`` (with ``connection_invalidated``, or
wrapping an asyncpg error), SQLAlchemy's pool ``TimeoutError``, raw asyncpg
errors from code that drives the connection itself (COPY, the event
verifier), and ``OSError`` from the socket while connecting.
``database_outage`` turns all of them into one ``DatabaseUnavailableError``
(503 at the REST edge, ``ServiceUnavailable`` at the S3 gateway) and leaves
every other error alone: a full disk (``ENOSPC``, SQLSTATE 53100) or a bad
statement is not an outage.

``OSError`` is trusted only where it cannot come from anything but the
database: ``db.engine`` wraps failures of the pool's connect in a
``DBAPIError`` through ``connect_failure``. This module does not retry and
does not restart anything (``db.supervisor`` does).
"""

from __future__ import annotations

import errno
import socket
from typing import Final

import asyncpg  # type: ignore[import-untyped]  # no stubs; only its exception classes
import sqlalchemy as sa

from artifactstore.errors import DatabaseUnavailableError

__all__ = [
    "DRIVER_ERRORS",
    "RETRY_AFTER_SECONDS",
    "connect_failure",
    "database_outage",
]

#: What a client is told to wait (``Retry-After``) while the database is away.
RETRY_AFTER_SECONDS: Final = 2

#: The exception families a database call can raise besides ours; the edges
#: route these through ``database_outage``.
DRIVER_ERRORS: Final[tuple[type[Exception], ...]] = (
    sa.exc.SQLAlchemyError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)

# SQLSTATEs of a server that is gone, going or not yet there: class 08
# (connection exception, asyncpg's ConnectionDoesNotExistError is 08003),
# admin/crash shutdown, "the database system is starting up" (57P03), and
# too many connections. Not 53100 (disk full) nor any other class 53.
_OUTAGE_SQLSTATES: Final = frozenset({"57P01", "57P02", "57P03", "53300"})
# Socket errors of a connect attempt that say "nobody answers there".
_CONNECT_ERRNOS: Final = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ENOENT,  # the embedded cluster's Unix socket is gone
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.EHOSTDOWN,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EADDRNOTAVAIL,
        errno.EPIPE,
    }
)
_MESSAGE: Final = "the database is unavailable; retry shortly"


def connect_failure(exc: BaseException) -> bool:
    """Whether an exception raised by a connect attempt means the server is unreachable.

    For the engine's connect hook only: there an ``OSError`` can only be the
    socket to the database. Even so only network errnos count, never e.g.
    ``EMFILE`` or ``ENOSPC``.
    """
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _CONNECT_ERRNOS
    return _driver_outage(exc)


def database_outage(exc: BaseException) -> DatabaseUnavailableError | None:
    """The 503 to answer when ``exc`` means the database is away, else None.

    Recognises: our own ``DatabaseUnavailableError``; a pool checkout that
    timed out; a ``DBAPIError`` SQLAlchemy flagged ``connection_invalidated``
    (a disconnect, or a connect that failed, see ``connect_failure``); and a
    driver error, raw or wrapped, whose SQLSTATE is a connection exception,
    a shutdown, "starting up" or too many connections, or that says the
    connection is closed.
    """
    if isinstance(exc, DatabaseUnavailableError):
        return exc
    if isinstance(exc, sa.exc.TimeoutError):
        return DatabaseUnavailableError(_MESSAGE, reason="no pooled connection became free")
    invalidated = isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated
    if invalidated or _driver_outage(exc):
        return DatabaseUnavailableError(_MESSAGE, reason="no connection to the database")
    return None


def _driver_outage(exc: BaseException) -> bool:
    # SQLAlchemy's DBAPIError wraps its asyncpg adapter's error (which copies
    # the SQLSTATE), whose __cause__ is asyncpg's own: look at each.
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 4:  # noqa: PLR2004 - the chain is at most 3 deep
        seen.append(current)
        current = current.orig if isinstance(current, sa.exc.DBAPIError) else current.__cause__
    for err in seen:
        sqlstate = str(getattr(err, "sqlstate", None) or "")
        if sqlstate.startswith("08") or sqlstate in _OUTAGE_SQLSTATES:
            return True
        if isinstance(err, asyncpg.InterfaceError) and "connection is closed" in str(err):
            return True
    return False
