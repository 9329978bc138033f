"""The embedded PostgreSQL cluster, with real servers and real second processes.

Pins DESIGN section 7 (zero-config database under the data dir, shared by
the processes that use it) and the test database fixtures of tests/conftest.py.
Data dirs come from ``tmp_data_dir``, not ``tmp_path``: see that fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from artifactstore.db.embedded import (
    DATABASE_NAME,
    INGEST_SETTINGS,
    EmbeddedPostgres,
    find_postgres_bindir,
    start_throwaway_cluster,
)
from artifactstore.db.engine import create_engine
from artifactstore.db.outage import database_outage
from artifactstore.db.supervisor import Supervisor

if TYPE_CHECKING:
    from collections.abc import Iterator

# A second, real user process: start, print the URL, wait for a line, release.
_USER_SCRIPT = """
import sys
from pathlib import Path
from artifactstore.db.embedded import EmbeddedPostgres
pg = EmbeddedPostgres(Path(sys.argv[1]))
print(pg.start(), flush=True)
sys.stdin.readline()
pg.release()
print("released", flush=True)
"""
_WAIT_SECONDS = 60.0


async def _scalar(url: str, sql: str) -> object:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.scalar(text(sql))
    finally:
        await engine.dispose()


@contextlib.contextmanager
def _user_process(data_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run ``_USER_SCRIPT`` on ``data_dir``; yield the process and the URL it got."""
    with subprocess.Popen(
        [sys.executable, "-c", _USER_SCRIPT, str(data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("postgresql+asyncpg://"), "second user failed to start"
            yield proc, url
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _finish(proc: subprocess.Popen[str]) -> str:
    """Tell a ``_user_process`` to release; return what it printed."""
    out, _ = proc.communicate("\n", timeout=_WAIT_SECONDS)
    assert proc.returncode == 0
    return out.strip()


def _wait_until_gone(pg: EmbeddedPostgres) -> None:
    deadline = time.monotonic() + _WAIT_SECONDS
    while pg.is_running() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_find_postgres_bindir_holds_the_programs() -> None:
    """The binaries directory found holds initdb, pg_ctl and postgres."""
    bindir = find_postgres_bindir()
    assert all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))


async def test_start_creates_cluster_and_database(tmp_data_dir: Path) -> None:
    """A first start initialises the cluster, creates `artifactstore` and serves queries."""
    async with EmbeddedPostgres(tmp_data_dir) as pg:
        assert pg.url.startswith("postgresql+asyncpg://postgres@/artifactstore?host=")
        assert await _scalar(pg.url, "SELECT current_database()") == DATABASE_NAME
        assert (tmp_data_dir / "postgres" / "data" / "PG_VERSION").is_file()
        assert pg.is_running()
    assert not pg.is_running()


async def test_dsn_works_with_plain_asyncpg(tmp_data_dir: Path) -> None:
    """The plain DSN connects with asyncpg alone, over the Unix socket only."""
    asyncpg = importlib.import_module("asyncpg")
    with EmbeddedPostgres(tmp_data_dir) as pg:
        conn = await asyncpg.connect(pg.dsn)
        try:
            assert await conn.fetchval("SHOW listen_addresses") == ""
            assert await conn.fetchval("SELECT current_database()") == DATABASE_NAME
        finally:
            await conn.close()


async def test_the_cluster_runs_with_ingest_settings_and_full_durability(
    tmp_data_dir: Path,
) -> None:
    """INGEST_SETTINGS are in force; fsync, synchronous_commit and full_page_writes stay on."""
    asyncpg = importlib.import_module("asyncpg")
    with EmbeddedPostgres(tmp_data_dir) as pg:
        conn = await asyncpg.connect(pg.dsn)
        try:
            for name, value in INGEST_SETTINGS.items():
                shown = await conn.fetchval(f"SHOW {name}")
                assert shown == value, name
            for name in ("fsync", "synchronous_commit", "full_page_writes"):
                assert await conn.fetchval(f"SHOW {name}") == "on", name
        finally:
            await conn.close()


def test_start_and_release_are_idempotent(tmp_data_dir: Path) -> None:
    """Calling start twice returns the same URL and release twice is harmless."""
    pg = EmbeddedPostgres(tmp_data_dir)
    assert pg.start() == pg.start()
    pg.release()
    pg.release()
    assert not pg.is_running()


def test_restart_reuses_existing_cluster(tmp_data_dir: Path) -> None:
    """A later start finds the initialised cluster and serves the same data dir again."""
    with EmbeddedPostgres(tmp_data_dir):
        pass
    created = (tmp_data_dir / "postgres" / "data" / "PG_VERSION").stat().st_mtime_ns
    with EmbeddedPostgres(tmp_data_dir) as pg:
        assert pg.is_running()
    assert (tmp_data_dir / "postgres" / "data" / "PG_VERSION").stat().st_mtime_ns == created


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another account")
def test_root_runs_the_server_as_an_unprivileged_account(tmp_data_dir: Path) -> None:
    """As root, PGDATA and the postmaster belong to a non-root account."""
    with EmbeddedPostgres(tmp_data_dir) as pg:
        pid = pg.postmaster_pid()
        assert pid is not None
        assert Path(f"/proc/{pid}").stat().st_uid != 0
        assert pg.pgdata.stat().st_uid != 0


async def test_two_processes_share_one_cluster(tmp_data_dir: Path) -> None:
    """Two processes share one postmaster, which stops only when the last one releases."""
    first = EmbeddedPostgres(tmp_data_dir)
    first.start()
    pid = first.postmaster_pid()
    with _user_process(tmp_data_dir) as (second, url):
        assert url == first.url
        assert first.postmaster_pid() == pid
        first.release()
        assert first.postmaster_pid() == pid
        assert await _scalar(url, "SELECT 1") == 1
        assert _finish(second) == "released"
    assert not first.is_running()


def test_first_user_keeps_cluster_while_second_releases(tmp_data_dir: Path) -> None:
    """A user releasing while another still holds the cluster leaves it running."""
    with EmbeddedPostgres(tmp_data_dir) as pg:
        with _user_process(tmp_data_dir) as (second, _):
            assert _finish(second) == "released"
        assert pg.is_running()
    assert not pg.is_running()


def test_sigkilled_user_does_not_block_stop(tmp_data_dir: Path) -> None:
    """A user killed with SIGKILL loses its claim, so the last real user stops the cluster."""
    pg = EmbeddedPostgres(tmp_data_dir)
    pg.start()
    with _user_process(tmp_data_dir) as (second, _):
        second.send_signal(signal.SIGKILL)
        second.wait()
    assert pg.is_running()
    pg.release()
    assert not pg.is_running()


def test_cluster_left_by_killed_user_is_reused(tmp_data_dir: Path) -> None:
    """A cluster left running by a SIGKILLed last user is reused, then stopped normally."""
    with _user_process(tmp_data_dir) as (second, _):
        second.send_signal(signal.SIGKILL)
        second.wait()
    pg = EmbeddedPostgres(tmp_data_dir)
    pid = pg.postmaster_pid()
    assert pid is not None
    pg.start()
    assert pg.postmaster_pid() == pid
    pg.release()
    assert not pg.is_running()


async def test_restart_after_postmaster_sigkill(tmp_data_dir: Path) -> None:
    """After the postmaster itself is SIGKILLed, the next start brings up a new one."""
    first = EmbeddedPostgres(tmp_data_dir)
    first.start()
    old_pid = first.postmaster_pid()
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    _wait_until_gone(first)
    assert (tmp_data_dir / "postgres" / "data" / "postmaster.pid").exists()
    with EmbeddedPostgres(tmp_data_dir) as second:
        new_pid = second.postmaster_pid()
        assert new_pid not in (None, old_pid)
        assert await _scalar(second.url, "SELECT current_database()") == DATABASE_NAME
        first.release()
        assert second.is_running()
    assert not second.is_running()


def test_recycled_pid_in_postmaster_pid_is_ignored(tmp_data_dir: Path) -> None:
    """A postmaster.pid naming a live process that is not our postmaster does not block start."""
    with EmbeddedPostgres(tmp_data_dir):
        pass
    pid_file = tmp_data_dir / "postgres" / "data" / "postmaster.pid"
    pid_file.write_text(f"{os.getpid()}\n{tmp_data_dir}\n0\n5432\n/nowhere\n\n0 0\nready\n")
    with EmbeddedPostgres(tmp_data_dir) as pg:
        assert pg.postmaster_pid() not in (None, os.getpid())
    assert not pid_file.exists()


def test_interrupted_initdb_is_redone(tmp_data_dir: Path) -> None:
    """Leftovers of an initdb killed half-way are discarded and the cluster is created."""
    staging = tmp_data_dir / "postgres" / "data.init"
    staging.mkdir(parents=True)
    (staging / "PG_VERSION").write_text("16\n")
    with EmbeddedPostgres(tmp_data_dir) as pg:
        assert pg.is_running()
    assert not staging.exists()


def test_keep_running_leaves_the_cluster_up(tmp_data_dir: Path) -> None:
    """With keep_running a release never stops the cluster; a normal last user does."""
    with EmbeddedPostgres(tmp_data_dir, keep_running=True) as pg:
        pass
    assert pg.is_running()
    with EmbeddedPostgres(tmp_data_dir):
        pass
    assert not pg.is_running()


async def test_long_data_dir_gets_short_socket_dir(tmp_data_dir: Path) -> None:
    """A data dir too long for a Unix socket path still works, via a hashed /tmp directory."""
    data_dir = tmp_data_dir / ("d" * 60) / ("e" * 60)
    async with EmbeddedPostgres(data_dir) as pg:
        socket_dir = pg.socket_dir
        assert not socket_dir.is_relative_to(data_dir)
        assert len(os.fsencode(socket_dir / ".s.PGSQL.5432")) <= 107
        assert socket_dir.stat().st_mode & 0o777 == 0o700
        assert await _scalar(pg.url, "SELECT current_database()") == DATABASE_NAME
    assert not socket_dir.exists()


async def test_throwaway_cluster_is_not_durable(tmp_data_dir: Path) -> None:
    """A throwaway cluster serves the postgres database with fsync off and stops idempotently."""
    url, stop = start_throwaway_cluster(tmp_data_dir / "pg")
    try:
        assert await _scalar(url, "SELECT current_database()") == "postgres"
        assert await _scalar(url, "SHOW fsync") == "off"
    finally:
        stop()
        stop()


def test_environment_is_isolated() -> None:
    """Tests see no ARTIFACTSTORE_* or AWS_* variable except the test database URL."""
    leaked = [
        name
        for name in os.environ
        if name.startswith(("ARTIFACTSTORE_", "AWS_")) and name != "ARTIFACTSTORE_TEST_DATABASE_URL"
    ]
    assert leaked == []


async def test_database_url_is_a_fresh_database(database_url: str) -> None:
    """Each test's database is a new copy of the migrated template, named t_<uuid>."""
    name = await _scalar(database_url, "SELECT current_database()")
    assert isinstance(name, str)
    assert name.startswith("t_")


async def test_empty_database_has_no_tables(empty_database_url: str) -> None:
    """The empty database fixture has no tables in the public schema."""
    count = await _scalar(
        empty_database_url,
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    assert count == 0


async def test_engine_fixture_connects(engine: AsyncEngine) -> None:
    """The engine fixture is bound to this test's own database."""
    async with engine.connect() as conn:
        name = await conn.scalar(text("SELECT current_database()"))
    assert isinstance(name, str)
    assert name.startswith("t_")


def test_revive_restarts_a_killed_postmaster_once_across_users(tmp_data_dir: Path) -> None:
    """Two users reviving a SIGKILLed cluster at once start exactly one new postmaster."""
    first, second = EmbeddedPostgres(tmp_data_dir), EmbeddedPostgres(tmp_data_dir)
    first.start()
    second.start()
    try:
        old_pid = first.postmaster_pid()
        assert old_pid is not None
        assert first.revive() is False  # running: nothing to do
        os.kill(old_pid, signal.SIGKILL)
        _wait_until_gone(first)
        with ThreadPoolExecutor(2) as pool:
            started = sorted(pool.map(EmbeddedPostgres.revive, (first, second)))
        assert started == [False, True]
        assert first.postmaster_pid() not in (None, old_pid)
    finally:
        second.release()
        first.release()
    assert not first.is_running()


async def test_supervisor_restarts_the_postmaster_and_refreshes_the_pool(
    tmp_data_dir: Path,
) -> None:
    """The supervisor restarts a SIGKILLed postmaster; the engine then answers again."""
    pg = EmbeddedPostgres(tmp_data_dir)
    engine = create_engine(pg.start())
    task = asyncio.create_task(Supervisor(pg, engine, check_seconds=0.05).run())
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
        old_pid = pg.postmaster_pid()
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        deadline = time.monotonic() + _WAIT_SECONDS
        while True:
            try:
                async with engine.connect() as conn:
                    assert await conn.scalar(text("SELECT 1")) == 1
                if pg.postmaster_pid() not in (None, old_pid):
                    break
            except DBAPIError as exc:
                if database_outage(exc) is None:
                    raise
            assert time.monotonic() < deadline, "the supervisor did not restart the cluster"
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await engine.dispose()
        pg.release()
