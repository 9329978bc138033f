"""Which exceptions mean "the database is away" (a 503 to retry) and which do not."""

from __future__ import annotations

import errno
import socket

import asyncpg  # type: ignore[import-untyped]  # no stubs
import pytest
import sqlalchemy as sa

from artifactstore.db.outage import connect_failure, database_outage
from artifactstore.errors import DatabaseUnavailableError


def _wrapped(driver_error: Exception, *, invalidated: bool = False) -> sa.exc.DBAPIError:
    """A driver error as SQLAlchemy hands it on (its DBAPI error's cause is asyncpg's)."""
    orig = Exception(str(driver_error))
    orig.__cause__ = driver_error
    orig.sqlstate = getattr(driver_error, "sqlstate", None)  # type: ignore[attr-defined]
    return sa.exc.DBAPIError(None, None, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.InterfaceError("connection is closed"),
        _wrapped(asyncpg.ConnectionDoesNotExistError("connection was closed")),
        _wrapped(asyncpg.CannotConnectNowError("the database system is shutting down")),
        _wrapped(ConnectionResetError(errno.ECONNRESET, "reset"), invalidated=True),
        sa.exc.TimeoutError("QueuePool limit of size 10 overflow 10 reached"),
        DatabaseUnavailableError("gone"),
    ],
    ids=type,
)
def test_outages_are_database_unavailable(exc: Exception) -> None:
    """Every way asyncpg and SQLAlchemy report a server gone or restarting becomes one 503 error."""
    outage = database_outage(exc)
    assert isinstance(outage, DatabaseUnavailableError)
    assert outage.code == "database_unavailable"


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        ConnectionRefusedError(errno.ECONNREFUSED, "refused"),  # not from the engine's connect
        asyncpg.exceptions.DiskFullError("could not extend file"),
        _wrapped(asyncpg.exceptions.DiskFullError("could not extend file")),
        _wrapped(asyncpg.exceptions.UniqueViolationError("duplicate key")),
        _wrapped(asyncpg.exceptions.InvalidTextRepresentationError("invalid input syntax")),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        ValueError("no"),
    ],
    ids=type,
)
def test_other_errors_are_not_outages(exc: Exception) -> None:
    """A full disk, a bad statement or a bare socket error elsewhere is not "the database is away"."""  # noqa: E501
    assert database_outage(exc) is None


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), True),
        (FileNotFoundError(errno.ENOENT, "no socket"), True),
        (TimeoutError(), True),
        (socket.gaierror(socket.EAI_NONAME, "unknown host"), True),
        (OSError(errno.EHOSTUNREACH, "no route"), True),
        (asyncpg.CannotConnectNowError("the database system is starting up"), True),
        (OSError(errno.ENOSPC, "No space left on device"), False),
        (OSError(errno.EMFILE, "Too many open files"), False),
        (asyncpg.exceptions.InvalidPasswordError("password authentication failed"), False),
    ],
    ids=repr,
)
def test_connect_failures(exc: Exception, expected: bool) -> None:
    """A connect attempt's socket errors mean unreachable; disk, descriptor and password errors do not."""  # noqa: E501
    assert connect_failure(exc) is expected
