"""PostgreSQL's programs driven from Python: one cluster directory, no sharing.

Owns finding the binaries, choosing the OS account the server runs as when we
are root, ``initdb``, ``pg_ctl start``/``stop`` and reading ``postmaster.pid``.
It takes no locks and knows nothing of other processes: ``embedded.py``
serialises every call and explains the policies (socket directory, root
account, sharing). Private to ``artifactstore.db``.
"""

from __future__ import annotations

import contextlib
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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from artifactstore.errors import DatabaseUnavailableError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "POLL_SECONDS",
    "SUPERUSER",
    "Account",
    "Cluster",
    "PidFile",
    "find_postgres_bindir",
    "is_postmaster_of",
    "read_pid_file",
    "server_account",
]

_log = logging.getLogger(__name__)

SUPERUSER = "postgres"
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
POLL_SECONDS = 0.02  # how often to look again at a lock or postmaster.pid
_ORPHAN_GRACE_SECONDS = 10.0  # for children of a killed postmaster to exit
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
class Account:
    """The unprivileged OS account the server runs as when we are root."""

    name: str
    uid: int
    gid: int


def server_account(root: Path, pgdata: Path) -> Account | None:
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
                return Account(name, info.st_uid, info.st_gid)
    for name in (_SERVICE_ACCOUNT, _CREATED_ACCOUNT):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return Account(name, entry.pw_uid, entry.pw_gid)
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
    return Account(_CREATED_ACCOUNT, entry.pw_uid, entry.pw_gid)


def _grant_traversal(path: Path, account: Account) -> None:
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


def _own_private_dir(path: Path, account: Account | None) -> None:
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
class PidFile:
    """What ``postmaster.pid`` says: pid, socket directory and status (line 8)."""

    pid: int
    socket_dir: Path | None
    status: str


def read_pid_file(pgdata: Path) -> PidFile | None:
    """Parse ``postmaster.pid``; None when absent, pid 0 while it is being written."""
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
    return PidFile(pid, socket_dir, status)


def is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """Whether ``pid`` is a live postgres serving ``pgdata`` (not dead, a zombie or reused)."""
    if pid <= 0:
        return False  # kill(0, ...) would address our own process group
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


class Cluster:
    """One PGDATA and the commands that act on it; no locking (callers serialise)."""

    def __init__(
        self,
        root: Path,
        *,
        bindir: Path,
        account: Account | None,
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
            hint = ""
            if self.account is not None and "Permission denied" in output:
                hint = (
                    f" (the server runs as {self.account.name}: every directory above "
                    f"{self.root} must stay searchable by it)"
                )
            raise DatabaseUnavailableError(
                f"{args[0]} failed with exit code {done.returncode}{hint}: "
                f"{output.strip()[-2000:]}",
                command=args[0],
            )
        return output

    def initialized(self) -> bool:
        """Whether PGDATA holds a cluster (``initialize`` renames it in whole)."""
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

    def ensure_running(self, timeout: float) -> PidFile:
        """Reuse a ready postmaster, wait out one starting or stopping, or start one.

        Raises:
            DatabaseUnavailableError: it is not ready within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            info = read_pid_file(self.pgdata)
            if info is None:
                break
            if info.pid and not is_postmaster_of(info.pid, self.pgdata):
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
            time.sleep(POLL_SECONDS)
        self._start(deadline)
        info = read_pid_file(self.pgdata)
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
        orphans_gone = time.monotonic() + _ORPHAN_GRACE_SECONDS
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
                if "still in use" in tail and time.monotonic() < min(deadline, orphans_gone):
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
        info = read_pid_file(self.pgdata)
        if info is None or not is_postmaster_of(info.pid, self.pgdata):
            return
        command = ["pg_ctl", "stop", "-D", str(self.pgdata), "-m", "fast", "-w"]
        try:
            self.run([*command, "-t", str(int(timeout))], timeout=timeout + 10)
        except DatabaseUnavailableError:
            info = read_pid_file(self.pgdata)
            if info is not None and is_postmaster_of(info.pid, self.pgdata):
                raise
        if self.socket_dir != self.root / "run":
            with contextlib.suppress(OSError):
                self.socket_dir.rmdir()
