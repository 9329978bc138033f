"""Root test configuration: a clean environment and a real PostgreSQL.

Owns what every suite may need: per-test isolation of ``ARTIFACTSTORE_*`` and
``AWS_*`` variables, the S3 settings read once at start-up, and the database
fixtures (``pg_admin_url``, ``migrated_template``, ``database_url``,
``empty_database_url``, ``engine``, ``tmp_data_dir``). It does not start S3 endpoints, apps or
servers: sub-directory conftests own those. PostgreSQL is always real
(DESIGN section 9, STYLE section 8); ``tests/README.md`` says where it comes from.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from tests.s3_endpoints import moto_endpoint  # noqa: F401 - a fixture for every suite

from artifactstore.db.embedded import start_throwaway_cluster

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping

TEST_DATABASE_URL_ENV = "ARTIFACTSTORE_TEST_DATABASE_URL"
# Read once, before any test runs: the per-test isolation below hides the
# other ARTIFACTSTORE_* and AWS_* variables from tests and code under test.
TEST_DATABASE_URL: str | None = os.environ.get(TEST_DATABASE_URL_ENV) or None
S3_SETTINGS: Mapping[str, str] = MappingProxyType(
    {name: value for name, value in os.environ.items() if name.startswith("S3_")}
)
ISOLATED_PREFIXES = ("ARTIFACTSTORE_", "AWS_")
TEMPLATE_DATABASE = "as_template"
_DOCKER_PROBE_SECONDS = 1.0
_POSTGRES_IMAGE = "postgres:16-alpine"


@pytest.fixture(autouse=True)
def _isolated_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide every ARTIFACTSTORE_* and AWS_* variable (but the test database URL)."""
    for name in list(os.environ):
        if name.startswith(ISOLATED_PREFIXES) and name != TEST_DATABASE_URL_ENV:
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def s3_settings() -> Mapping[str, str]:
    """The ``S3_*`` variables (a Ceph RGW's endpoint and credentials) as given at start-up."""
    return S3_SETTINGS


@pytest.fixture
def tmp_data_dir() -> Iterator[Path]:
    """A fresh directory under /tmp that another account can reach; removed afterwards.

    Use it, not ``tmp_path``, as the data dir of an embedded PostgreSQL: when
    we are root the server runs as ``postgres``, and every pytest session that
    starts resets pytest's base directory to mode 0700, cutting it off.
    """
    path = Path(tempfile.mkdtemp(prefix="artifactstore-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _docker_answers() -> bool:
    """Whether a Docker engine answers ``/_ping`` on DOCKER_HOST or the default socket."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    family: socket.AddressFamily
    address: str | tuple[str, int]
    if host.startswith("unix://"):
        address = host.removeprefix("unix://")
        if not Path(address).exists():
            return False
        family = socket.AF_UNIX
    elif host.startswith("tcp://"):
        name, _, port = host.removeprefix("tcp://").rstrip("/").rpartition(":")
        family, address = socket.AF_INET, (name, int(port or "2375"))
    else:
        return False
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(_DOCKER_PROBE_SECONDS)
            probe.connect(address)
            probe.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = probe.recv(64)
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply


def _asyncpg_url(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql+asyncpg")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A superuser SQLAlchemy (asyncpg) URL to the ``postgres`` database of a real server.

    In order: ``ARTIFACTSTORE_TEST_DATABASE_URL``; a testcontainers PostgreSQL
    when a Docker engine answers; else a throwaway cluster (fsync off) in a
    temporary directory, stopped and removed at the end of the session. Each
    xdist worker is a process and gets its own.
    """
    if TEST_DATABASE_URL is not None:
        yield _asyncpg_url(TEST_DATABASE_URL)
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer  # noqa: PLC0415 - Docker only

        with PostgresContainer(_POSTGRES_IMAGE, driver="asyncpg") as container:
            yield _asyncpg_url(container.get_connection_url(), "postgres")
        return
    # Not pytest's tmp_path: pytest keeps its base directory at mode 0700,
    # which a server running as another account (we may be root) cannot enter.
    directory = Path(tempfile.mkdtemp(prefix="artifactstore-test-pg-"))
    try:
        url, stop = start_throwaway_cluster(directory)
        try:
            yield url
        finally:
            stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
async def _pg_admin(pg_admin_url: str) -> AsyncIterator[AsyncEngine]:
    """An autocommit engine on ``pg_admin_url``, for CREATE and DROP DATABASE."""
    admin = create_async_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    try:
        yield admin
    finally:
        await admin.dispose()


async def _drop_database(admin: AsyncEngine, name: str) -> None:
    async with admin.connect() as conn:
        exists = await conn.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
        )
        if exists:
            await conn.execute(text(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false'))
            await conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
async def migrated_template(pg_admin_url: str, _pg_admin: AsyncEngine) -> str:
    """The name of a database migrated to the newest schema once, to copy per test.

    It is ``as_template`` on a private server; on a shared one
    (``ARTIFACTSTORE_TEST_DATABASE_URL``) each xdist worker gets its own.
    Skips the tests that need it while ``artifactstore.db.migrate`` is absent.
    """
    try:
        from artifactstore.db import migrate  # noqa: PLC0415 - written separately
    except ImportError:
        pytest.skip("artifactstore.db.migrate does not exist yet")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    shared = TEST_DATABASE_URL is not None and worker
    name = f"{TEMPLATE_DATABASE}_{worker}" if shared else TEMPLATE_DATABASE
    await _drop_database(_pg_admin, name)
    async with _pg_admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await asyncio.to_thread(migrate.upgrade, _asyncpg_url(pg_admin_url, name))
    async with _pg_admin.connect() as conn:
        # CREATE DATABASE ... TEMPLATE refuses while anyone is connected to it.
        await conn.execute(
            text(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')
        )
        await conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": name},
        )
    return name


@contextlib.asynccontextmanager
async def _fresh_database(
    pg_admin_url: str, admin: AsyncEngine, template: str
) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex}"
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    try:
        yield _asyncpg_url(pg_admin_url, name)
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database_url(
    pg_admin_url: str, _pg_admin: AsyncEngine, migrated_template: str
) -> AsyncIterator[str]:
    """The URL of a fresh, migrated database of this test's own, dropped afterwards."""
    async with _fresh_database(pg_admin_url, _pg_admin, migrated_template) as url:
        yield url


@pytest.fixture
async def empty_database_url(pg_admin_url: str, _pg_admin: AsyncEngine) -> AsyncIterator[str]:
    """The URL of a fresh database with no schema at all (for migration tests)."""
    async with _fresh_database(pg_admin_url, _pg_admin, "template0") as url:
        yield url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An ``AsyncEngine`` on ``database_url``, disposed after the test."""
    created = create_async_engine(database_url)
    try:
        yield created
    finally:
        await created.dispose()
