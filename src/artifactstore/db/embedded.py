"""The embedded PostgreSQL cluster: zero-configuration database under the data dir.

Owns the cluster in ``<data_dir>/postgres`` (PGDATA in ``data/``, the server
log in ``postgres.log``): created on first use, started on demand, stopped
when its last user lets go (DESIGN section 7); plus the throwaway, non-durable
clusters the test session uses (DESIGN section 9). The mechanics (binaries,
initdb, pg_ctl, postmaster.pid) live in ``_pgctl.py``; this module holds the
policies. It does not create the schema: callers run
``artifactstore.db.migrate.upgrade`` on the URL ``start()`` returns.
Production points ``database.url`` at a real server and never touches this
module.

The cluster listens on a Unix socket only (``listen_addresses = ''``) and
trusts local connections: whoever can reach the socket directory (mode 0700)
is its owner, so the directory's permissions are the authentication.
Sockets are limited to about 107 bytes of path, so a long data dir gets its
socket directory under ``/tmp``, named by a hash of the data dir.

Sharing between processes (a server and CLI commands at once) rests on
``flock(2)``, whose locks die with their process:

- ``control.lock`` (exclusive) serialises starting and stopping;
- each process using the cluster holds ``users.lock`` shared;
- on release, under the control lock, a user drops its shared lock and tries
  a non-blocking exclusive one: success means nobody else is using the
  cluster, so it stops it (``pg_ctl stop -m fast``).

A user killed with SIGKILL loses its locks, so it never keeps the cluster
alive, and a cluster left running by a killed process is reused by the next
start. If the postmaster itself was killed, its ``postmaster.pid`` names a
dead process, a zombie or a recycled pid; ``start`` recognises that (the
process's command line must name our PGDATA) and starts a fresh postmaster.

Running as root: ``initdb`` and ``postgres`` refuse to run as root. pgserver
creates a ``pgserver`` account and widens permissions (``g+rx,o+rx``) on every
ancestor directory. We instead run the server as an existing unprivileged
account: the owner of an existing cluster, else the distribution's
``postgres`` account, else a system account ``artifactstore-pg`` created with
``useradd --system``. ``<data_dir>/postgres`` is owned by that account (mode
0700; root keeps full access regardless), and only the search bit (``x``,
never ``r``) is added to ancestor directories the account cannot traverse,
so it can reach its files without being able to list anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Self
from urllib.parse import quote

from artifactstore.db._pgctl import (
    POLL_SECONDS,
    SUPERUSER,
    Cluster,
    find_postgres_bindir,
    is_postmaster_of,
    read_pid_file,
    server_account,
)
from artifactstore.errors import DatabaseUnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from types import TracebackType

__all__ = [
    "DATABASE_NAME",
    "DEFAULT_START_TIMEOUT",
    "INGEST_SETTINGS",
    "SUPERUSER",
    "THROWAWAY_SETTINGS",
    "EmbeddedPostgres",
    "find_postgres_bindir",
    "start_throwaway_cluster",
]

_log = logging.getLogger(__name__)

DATABASE_NAME = "artifactstore"
DEFAULT_START_TIMEOUT = 60.0
# Throughput settings of the embedded cluster; durability is untouched (fsync,
# synchronous_commit and full_page_writes keep their defaults). Measured with
# the postgres backend's 1 MiB blocks (docs/OPERATOR.md has the figures):
# - wal_buffers 64MB (default 4MB at our shared_buffers): a 1 MiB block no
#   longer fills the buffer, so the backend stops writing WAL itself 8 KiB at
#   a time; the WAL writer (another process, so another core) writes it.
# - wal_writer_delay 10ms: the WAL writer empties those buffers often enough.
# - wal_init_zero off: a new 16 MB WAL segment is not first written with
#   zeros (that doubled the WAL writes of a fresh cluster). Commits still
#   fdatasync the WAL, which also persists the blocks the file system
#   allocated; recycled segments are reused as before.
# - bgwriter_delay 10ms, bgwriter_lru_maxpages 1000: the background writer
#   (up to ~800 MB/s instead of 4 MB/s) writes dirty pages, not the backend.
INGEST_SETTINGS: Mapping[str, str] = MappingProxyType(
    {
        "wal_buffers": "64MB",
        "wal_writer_delay": "10ms",
        "wal_init_zero": "off",
        "bgwriter_delay": "10ms",
        "bgwriter_lru_maxpages": "1000",
    }
)
# Durability traded for speed: for test clusters that die with the session.
THROWAWAY_SETTINGS: Mapping[str, str] = MappingProxyType(
    {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
)


def _urls(database: str, socket_dir: Path) -> tuple[str, str]:
    """(SQLAlchemy asyncpg URL, plain libpq/asyncpg DSN) for a socket connection."""
    dsn = f"postgresql://{SUPERUSER}@/{database}?host={quote(str(socket_dir), safe='/')}"
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1), dsn


@contextlib.contextmanager
def _exclusive(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive flock on ``path``; raise if not granted within ``timeout``."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DatabaseUnavailableError(
                        f"timed out waiting for {path}; another process is starting "
                        "or stopping the embedded PostgreSQL"
                    ) from None
                time.sleep(POLL_SECONDS)
        yield
    finally:
        os.close(fd)  # closing the descriptor drops the lock


class EmbeddedPostgres:
    """A PostgreSQL cluster under ``<data_dir>/postgres``, shared by every local process.

    ``start()`` initialises the cluster on first use (with the database
    ``artifactstore``), starts it unless it runs already, and registers this
    object as a user; ``release()`` unregisters and stops the cluster if it was
    the last user (unless ``keep_running``). Both are idempotent. Use it as a
    context manager (sync or async) to pair them. ``settings`` are the server
    options (``-c``) used when this object starts the server; they default to
    ``INGEST_SETTINGS``.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        keep_running: bool = False,
        bindir: Path | None = None,
        settings: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.root = self.data_dir / "postgres"
        self.pgdata = self.root / "data"
        self.log_file = self.root / "postgres.log"
        self.keep_running = keep_running
        self._bindir = bindir
        self._settings: Mapping[str, str] = dict(INGEST_SETTINGS if settings is None else settings)
        self._timeout = timeout
        self._mutex = threading.Lock()
        self._users_fd: int | None = None
        self._cluster: Cluster | None = None
        self._socket_dir: Path | None = None

    def __repr__(self) -> str:
        state = "started" if self._users_fd is not None else "released"
        return f"EmbeddedPostgres({str(self.data_dir)!r}, {state})"

    @property
    def url(self) -> str:
        """SQLAlchemy URL ``postgresql+asyncpg://postgres@/artifactstore?host=<socket dir>``.

        Raises:
            DatabaseUnavailableError: ``start()`` has not been called.
        """
        return _urls(DATABASE_NAME, self.socket_dir)[0]

    @property
    def dsn(self) -> str:
        """The same connection as a plain ``postgresql://`` DSN (asyncpg, libpq)."""
        return _urls(DATABASE_NAME, self.socket_dir)[1]

    @property
    def socket_dir(self) -> Path:
        """The directory holding the server's Unix socket (valid after ``start()``)."""
        if self._socket_dir is None:
            raise DatabaseUnavailableError("embedded PostgreSQL is not started")
        return self._socket_dir

    def postmaster_pid(self) -> int | None:
        """The pid of the running postmaster, or None when none serves this data dir."""
        info = read_pid_file(self.pgdata)
        if info is None or not is_postmaster_of(info.pid, self.pgdata):
            return None
        return info.pid

    def is_running(self) -> bool:
        """Whether a postmaster currently serves this data dir (whoever started it)."""
        return self.postmaster_pid() is not None

    def start(self) -> str:
        """Make sure the cluster runs and hold it; return its SQLAlchemy URL.

        Idempotent: a second call returns the same URL. Takes a few seconds on
        first use (initdb), well under one on an existing cluster.

        Raises:
            DatabaseUnavailableError: no binaries, no usable account, or the
                server did not start (the message carries the log's tail).
        """
        with self._mutex:
            if self._users_fd is not None:
                return self.url
            self.root.mkdir(parents=True, exist_ok=True)
            root = self.root
            with _exclusive(root / "control.lock", self._timeout):
                # Blocks at most briefly: exclusive holders also hold the control lock.
                users_fd = os.open(
                    root / "users.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
                try:
                    fcntl.flock(users_fd, fcntl.LOCK_SH)
                    cluster = self._cluster or self._make_cluster(root)
                    cluster.prepare()
                    if not cluster.initialized():
                        cluster.initialize(database=DATABASE_NAME, sync=True, timeout=self._timeout)
                    info = cluster.ensure_running(self._timeout)
                except BaseException:
                    os.close(users_fd)
                    raise
            self._cluster = cluster
            self._users_fd = users_fd
            self._socket_dir = info.socket_dir
            return self.url

    def revive(self) -> bool:
        """Start the postmaster again if it died while we hold the cluster.

        Under the control lock, like ``start``: of several processes that
        notice at once (a server and a CLI command), one starts it and the
        others find it running. Returns whether this call started it.

        Raises:
            DatabaseUnavailableError: not started by this object, or it did
                not come back (as ``start``).
        """
        with self._mutex:
            cluster = self._cluster
            if self._users_fd is None or cluster is None:
                raise DatabaseUnavailableError("embedded PostgreSQL is not started")
            with _exclusive(cluster.root / "control.lock", self._timeout):
                if self.is_running():
                    return False
                info = cluster.ensure_running(self._timeout)
            self._socket_dir = info.socket_dir
            return True

    def _make_cluster(self, root: Path) -> Cluster:
        bindir = self._bindir or find_postgres_bindir()
        account = server_account(root, root / "data")
        return Cluster(root, bindir=bindir, account=account, settings=self._settings)

    def release(self) -> None:
        """Stop using the cluster; stop it too if no other process uses it.

        Idempotent. With ``keep_running`` the cluster is never stopped here.
        A failed stop is logged, not raised: the next start copes with any
        state the server is left in.
        """
        with self._mutex:
            users_fd, cluster = self._users_fd, self._cluster
            if users_fd is None or cluster is None:
                return
            try:
                with _exclusive(cluster.root / "control.lock", self._timeout):
                    fcntl.flock(users_fd, fcntl.LOCK_UN)
                    if not self.keep_running and _try_exclusive(users_fd):
                        cluster.stop(self._timeout)
            except DatabaseUnavailableError:
                _log.warning("could not stop the embedded PostgreSQL", exc_info=True)
            finally:
                os.close(users_fd)
                self._users_fd = None
                self._socket_dir = None

    async def astart(self) -> str:
        """``start()`` on a worker thread, for callers inside an event loop."""
        import asyncio  # noqa: PLC0415 - only async callers pay for it

        return await asyncio.to_thread(self.start)

    async def arelease(self) -> None:
        """``release()`` on a worker thread, for callers inside an event loop."""
        import asyncio  # noqa: PLC0415 - only async callers pay for it

        await asyncio.to_thread(self.release)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    async def __aenter__(self) -> Self:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.arelease()


def _try_exclusive(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def start_throwaway_cluster(
    path: Path,
    *,
    bindir: Path | None = None,
    settings: Mapping[str, str] = THROWAWAY_SETTINGS,
    timeout: float = DEFAULT_START_TIMEOUT,
) -> tuple[str, Callable[[], None]]:
    """Initialise and start a private, non-durable cluster in ``path`` (for tests).

    Not shared and not locked: the caller owns it and must call the returned
    ``stop`` (idempotent). Durability is off (``THROWAWAY_SETTINGS``).

    Returns:
        The SQLAlchemy asyncpg URL of a superuser connection to the ``postgres``
        database, and the function that stops the server.

    Raises:
        DatabaseUnavailableError: as ``EmbeddedPostgres.start``.
    """
    root = Path(path).absolute()
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    cluster = Cluster(
        root,
        bindir=bindir or find_postgres_bindir(),
        account=server_account(root, root / "data"),
        settings=settings,
    )
    cluster.prepare()
    if not cluster.initialized():
        cluster.initialize(database=None, sync=False, timeout=timeout)
    info = cluster.ensure_running(timeout)
    assert info.socket_dir is not None  # ensure_running guarantees it

    def stop() -> None:
        cluster.stop(timeout)

    return _urls("postgres", info.socket_dir)[0], stop
