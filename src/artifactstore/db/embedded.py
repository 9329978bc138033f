"""The embedded PostgreSQL cluster: zero-configuration database under the data dir.

Owns finding PostgreSQL binaries, creating a cluster in ``<data_dir>/postgres``
(PGDATA in ``data/``, the server log in ``postgres.log``), starting it on
demand and stopping it when its last user lets go (DESIGN section 7), plus the
throwaway, non-durable clusters the test session uses (DESIGN section 9). It
does not create the schema: callers run ``artifactstore.db.migrate.upgrade``
on the URL ``start()`` returns. Production points ``database.url`` at a real
server and never touches this module.

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
import hashlib
import importlib.util
import logging
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote

from artifactstore.errors import DatabaseUnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from types import TracebackType

__all__ = [
    "DATABASE_NAME",
    "DEFAULT_START_TIMEOUT",
    "SUPERUSER",
    "THROWAWAY_SETTINGS",
    "EmbeddedPostgres",
    "find_postgres_bindir",
    "start_throwaway_cluster",
]

_log = logging.getLogger(__name__)

DATABASE_NAME = "artifactstore"
SUPERUSER = "postgres"
DEFAULT_START_TIMEOUT = 60.0
# Durability traded for speed: for test clusters that die with the session.
THROWAWAY_SETTINGS: Mapping[str, str] = MappingProxyType(
    {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
)

_SERVICE_ACCOUNT = "postgres"
_CREATED_ACCOUNT = "artifactstore-pg"
# sockaddr_un.sun_path holds 108 bytes on Linux, 104 on the BSDs and macOS,
# including the terminating NUL; PostgreSQL refuses longer paths.
_SUN_PATH_MAX = 103 if sys.platform == "darwin" else 107
_PORT = 5432  # with no TCP listener the port only names the socket file
_SOCKET_NAME = f".s.PGSQL.{_PORT}"
_PRIVATE_MODE = 0o700
_PID_LINE_SOCKET_DIR = 4  # 0-based indices into postmaster.pid
_PID_LINE_STATUS = 7
_LOG_ROTATE_BYTES = 8 * 1024 * 1024
_POLL_SECONDS = 0.02
_INSTALL_HINT = (
    "no PostgreSQL binaries found: install the 'pgserver' wheel (it bundles them) "
    "or put PostgreSQL's bin directory (with pg_ctl and initdb) on PATH, "
    "or set database.url to a running server"
)


def find_postgres_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Prefers pgserver's bundled PostgreSQL, else the directory of ``pg_ctl`` on
    PATH (symlinks resolved, so ``initdb`` is found beside it).

    Raises:
        DatabaseUnavailableError: neither exists; the message says what to install.
    """
    # Locate pgserver without importing it: its import has side effects
    # (platformdirs runtime dir, warnings) and we only need its files.
    spec = importlib.util.find_spec("pgserver")
    locations = spec.submodule_search_locations if spec is not None else None
    for location in locations or ():
        bundled = Path(location).resolve() / "pginstall" / "bin"
        if _has_binaries(bundled):
            return bundled
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        candidate = Path(on_path).resolve().parent
        if _has_binaries(candidate):
            return candidate
    raise DatabaseUnavailableError(_INSTALL_HINT)


def _has_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres"))


@dataclass(frozen=True, slots=True)
class _Account:
    """The unprivileged OS account the server runs as when we are root."""

    name: str
    uid: int
    gid: int


def _server_account(root: Path, pgdata: Path) -> _Account | None:
    """None when we are not root (the server runs as us), else the account to use."""
    if os.geteuid() != 0:
        return None
    for existing in (pgdata, root):
        with contextlib.suppress(FileNotFoundError):
            info = existing.stat()
            if info.st_uid != 0:
                try:
                    name = pwd.getpwuid(info.st_uid).pw_name
                except KeyError:
                    name = str(info.st_uid)
                return _Account(name, info.st_uid, info.st_gid)
    for name in (_SERVICE_ACCOUNT, _CREATED_ACCOUNT):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return _Account(name, entry.pw_uid, entry.pw_gid)
    useradd = shutil.which("useradd")
    if useradd is None:
        raise DatabaseUnavailableError(
            f"running as root: PostgreSQL must run as another account; create "
            f"'{_SERVICE_ACCOUNT}' or run artifactstore as an unprivileged user"
        )
    command = [useradd, "--system", "--user-group", "--no-create-home"]
    command += ["--shell", "/usr/sbin/nologin", _CREATED_ACCOUNT]
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise DatabaseUnavailableError(
            f"cannot create system account {_CREATED_ACCOUNT}: {done.stderr.strip()}"
        )
    entry = pwd.getpwnam(_CREATED_ACCOUNT)
    _log.info("created system account %s to run PostgreSQL", _CREATED_ACCOUNT)
    return _Account(_CREATED_ACCOUNT, entry.pw_uid, entry.pw_gid)


def _grant_traversal(path: Path, account: _Account) -> None:
    """Add only the search bit to ``path`` and its ancestors where ``account`` lacks it."""
    for directory in (path, *path.parents):
        info = directory.stat()
        if info.st_uid == account.uid:
            bit = stat.S_IXUSR
        elif info.st_gid == account.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            _log.info("adding search permission on %s for %s", directory, account.name)
            directory.chmod(stat.S_IMODE(info.st_mode) | bit)


def _own_private_dir(path: Path, account: _Account | None) -> None:
    """Make ``path`` a 0700 directory owned by the server's account.

    Raises:
        DatabaseUnavailableError: it is a symlink or belongs to somebody else.
    """
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=_PRIVATE_MODE, parents=True)
    info = path.lstat()
    me = os.geteuid()
    want = account.uid if account is not None else me
    if not stat.S_ISDIR(info.st_mode) or (info.st_uid not in (want, me)):
        raise DatabaseUnavailableError(
            f"{path} must be a directory owned by uid {want}; move it away", path=str(path)
        )
    if account is not None and info.st_uid != want:
        os.chown(path, account.uid, account.gid)
    if stat.S_IMODE(info.st_mode) != _PRIVATE_MODE:
        path.chmod(_PRIVATE_MODE)


def _socket_dir_for(root: Path) -> Path:
    """``<root>/run`` if the socket path fits in ``sun_path``, else a hashed /tmp dir."""
    preferred = root / "run"
    if len(os.fsencode(preferred / _SOCKET_NAME)) <= _SUN_PATH_MAX:
        return preferred
    digest = hashlib.sha256(os.fsencode(root)).hexdigest()[:16]
    return Path("/tmp") / f"artifactstore-pg-{digest}"  # noqa: S108 - private 0700 dir, ownership checked


@dataclass(frozen=True, slots=True)
class _PidFile:
    """What ``postmaster.pid`` says: pid, socket directory and status (line 8)."""

    pid: int
    socket_dir: Path | None
    status: str


def _read_pid_file(pgdata: Path) -> _PidFile | None:
    try:
        lines = (pgdata / "postmaster.pid").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    # Layout: PostgreSQL's src/include/utils/pidfile.h (LOCK_FILE_LINE_*, 1-based).
    lines += [""] * (_PID_LINE_STATUS + 1 - len(lines))
    pid = int(lines[0]) if lines[0].strip().isdigit() else 0
    socket_dir = (
        Path(lines[_PID_LINE_SOCKET_DIR].strip()) if lines[_PID_LINE_SOCKET_DIR].strip() else None
    )
    status = lines[_PID_LINE_STATUS].strip() or "starting"
    return _PidFile(pid, socket_dir, status)


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """Whether ``pid`` is a live postgres serving ``pgdata`` (not dead, a zombie or reused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Someone else's process: as root that cannot happen; otherwise it is
        # not our server, which runs as us.
        return False
    proc = Path("/proc") / str(pid) / "cmdline"
    if not proc.parent.parent.joinpath("self").exists():
        return True  # no procfs (macOS): trust the pid
    try:
        cmdline = proc.read_bytes()  # empty for a zombie
    except OSError:
        return False
    return os.fsencode(pgdata) in cmdline.split(b"\0")


def _child_env() -> dict[str, str]:
    # PGDATA, PGHOST, PGOPTIONS ... from the caller's shell must not steer our cluster.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


class _Cluster:
    """One PGDATA and the commands that act on it; no locking (callers serialise)."""

    def __init__(
        self,
        root: Path,
        *,
        bindir: Path,
        account: _Account | None,
        settings: Mapping[str, str],
    ) -> None:
        self.root = root
        self.pgdata = root / "data"
        self.log_file = root / "postgres.log"
        self.socket_dir = _socket_dir_for(root)
        self.bindir = bindir
        self.account = account
        self.settings = dict(settings)

    def prepare(self) -> None:
        """Own ``root`` (and make it reachable) for the server's account."""
        _own_private_dir(self.root, self.account)
        if self.account is not None:
            _grant_traversal(self.root, self.account)
            _grant_traversal(self.bindir, self.account)

    def run(self, args: Sequence[str], *, timeout: float, stdin: str | None = None) -> str:
        """Run a PostgreSQL program as the server's account; its output, or raise."""
        program = str(self.bindir / args[0])
        extra: dict[str, Any] = {"umask": 0o077}
        if self.account is not None:
            extra.update(user=self.account.uid, group=self.account.gid, extra_groups=[])
        # Output goes to a file: pg_ctl's postmaster must not inherit a pipe we wait on.
        with tempfile.TemporaryFile() as out:
            try:
                done = subprocess.run(  # noqa: S603 - fixed program, no shell
                    [program, *args[1:]],
                    input=None if stdin is None else stdin.encode(),
                    stdin=subprocess.DEVNULL if stdin is None else None,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.root,
                    env=_child_env(),
                    timeout=timeout,
                    check=False,
                    start_new_session=True,  # a Ctrl-C in our terminal must not reach it
                    **extra,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise DatabaseUnavailableError(f"cannot run {program}: {exc}") from exc
            out.seek(0)
            output = out.read().decode(errors="replace")
        if done.returncode != 0:
            raise DatabaseUnavailableError(
                f"{args[0]} failed with exit code {done.returncode}: {output.strip()[-2000:]}",
                command=args[0],
            )
        return output

    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").is_file()

    def initialize(self, *, database: str | None, sync: bool, timeout: float) -> None:
        """Create PGDATA (and ``database``) atomically: build aside, then rename.

        A process killed half-way leaves only the ``.init`` directory, which the
        next attempt removes.

        Raises:
            DatabaseUnavailableError: PGDATA holds something else, or initdb failed.
        """
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise DatabaseUnavailableError(
                f"{self.pgdata} is not empty and not a PostgreSQL cluster; move it away",
                path=str(self.pgdata),
            )
        staging = self.pgdata.with_name("data.init")
        shutil.rmtree(staging, ignore_errors=True)
        initdb = ["initdb", "-D", str(staging), "-U", SUPERUSER, "-E", "UTF8", "--locale=C"]
        initdb += ["--auth-local=trust", "--auth-host=reject", "--no-instructions"]
        if not sync:
            initdb.append("--no-sync")
        self.run(initdb, timeout=timeout)
        if database is not None:
            # Single-user mode needs no client binaries and opens no socket.
            # It exits 0 even when a statement fails, so read its output.
            single = ["postgres", "--single", "-D", str(staging), "-c", "listen_addresses="]
            output = self.run(
                [*single, "postgres"], stdin=f'CREATE DATABASE "{database}";\n', timeout=timeout
            )
            if "ERROR:" in output or "FATAL:" in output:
                raise DatabaseUnavailableError(f"cannot create database {database}: {output}")
        with contextlib.suppress(FileNotFoundError):
            self.pgdata.rmdir()
        staging.rename(self.pgdata)

    def ensure_running(self, timeout: float) -> _PidFile:
        """Reuse a ready postmaster, wait out one starting or stopping, or start one.

        Raises:
            DatabaseUnavailableError: it is not ready within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            info = _read_pid_file(self.pgdata)
            if info is None:
                break
            if info.pid and not _is_postmaster_of(info.pid, self.pgdata):
                # Left by a killed postmaster. PostgreSQL removes it itself when
                # the pid is dead, but refuses when the pid was recycled or is a
                # zombie; we hold the control lock, so nobody is starting one.
                _log.info("removing stale postmaster.pid (pid %d)", info.pid)
                (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
                break
            if info.status == "ready" and info.socket_dir is not None:
                return info
            if time.monotonic() > deadline:
                raise DatabaseUnavailableError(
                    f"PostgreSQL in {self.pgdata} stuck in state {info.status!r}"
                )
            time.sleep(_POLL_SECONDS)
        self._start(deadline)
        info = _read_pid_file(self.pgdata)
        if info is None or info.status != "ready" or info.socket_dir is None:
            raise DatabaseUnavailableError(f"PostgreSQL in {self.pgdata} did not become ready")
        return info

    def _start(self, deadline: float) -> None:
        _own_private_dir(self.socket_dir, self.account)
        # No postmaster runs, and the directory is private: leftovers are stale
        # (and would make PostgreSQL refuse if their pid was recycled).
        for leftover in (_SOCKET_NAME, f"{_SOCKET_NAME}.lock"):
            (self.socket_dir / leftover).unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if self.log_file.stat().st_size > _LOG_ROTATE_BYTES:
                self.log_file.replace(self.log_file.with_name(self.log_file.name + ".1"))
        options = ["-c", "listen_addresses=", "-k", str(self.socket_dir), "-p", str(_PORT)]
        for name, value in self.settings.items():
            options += ["-c", f"{name}={value}"]
        while True:
            offset = self.log_file.stat().st_size if self.log_file.exists() else 0
            wait = max(1, int(deadline - time.monotonic()))
            command = ["pg_ctl", "start", "-D", str(self.pgdata), "-l", str(self.log_file)]
            # pg_ctl hands -o to /bin/sh, hence the quoting.
            command += ["-w", "-t", str(wait), "-o", shlex.join(options)]
            try:
                self.run(command, timeout=wait + 10)
            except DatabaseUnavailableError as exc:
                tail = self._log_since(offset)
                # After a SIGKILLed postmaster its children take a moment to
                # notice and detach from shared memory; PostgreSQL waits for none.
                if "still in use" in tail and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                raise DatabaseUnavailableError(
                    f"PostgreSQL did not start ({exc.message}); server log: {tail[-2000:]}",
                    log=str(self.log_file),
                ) from exc
            return

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float) -> None:
        """Stop the postmaster (fast mode: roll back sessions); no-op if none runs.

        Raises:
            DatabaseUnavailableError: pg_ctl failed and the server still runs.
        """
        info = _read_pid_file(self.pgdata)
        if info is None or not _is_postmaster_of(info.pid, self.pgdata):
            return
        command = ["pg_ctl", "stop", "-D", str(self.pgdata), "-m", "fast", "-w"]
        try:
            self.run([*command, "-t", str(int(timeout))], timeout=timeout + 10)
        except DatabaseUnavailableError:
            info = _read_pid_file(self.pgdata)
            if info is not None and _is_postmaster_of(info.pid, self.pgdata):
                raise
        if self.socket_dir != self.root / "run":
            with contextlib.suppress(OSError):
                self.socket_dir.rmdir()


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
                time.sleep(_POLL_SECONDS)
        yield
    finally:
        os.close(fd)  # closing the descriptor drops the lock


class EmbeddedPostgres:
    """A PostgreSQL cluster under ``<data_dir>/postgres``, shared by every local process.

    ``start()`` initialises the cluster on first use (with the database
    ``artifactstore``), starts it unless it runs already, and registers this
    object as a user; ``release()`` unregisters and stops the cluster if it was
    the last user (unless ``keep_running``). Both are idempotent. Use it as a
    context manager (sync or async) to pair them.
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
        self._settings: Mapping[str, str] = dict(settings or {})
        self._timeout = timeout
        self._mutex = threading.Lock()
        self._users_fd: int | None = None
        self._cluster: _Cluster | None = None
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
        info = _read_pid_file(self.pgdata)
        if info is None or not _is_postmaster_of(info.pid, self.pgdata):
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

    def _make_cluster(self, root: Path) -> _Cluster:
        bindir = self._bindir or find_postgres_bindir()
        account = _server_account(root, root / "data")
        return _Cluster(root, bindir=bindir, account=account, settings=self._settings)

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
    cluster = _Cluster(
        root,
        bindir=bindir or find_postgres_bindir(),
        account=_server_account(root, root / "data"),
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
