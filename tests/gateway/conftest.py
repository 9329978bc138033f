"""S3 gateway fixtures: one published data set and one real gateway server per test session.

Owns: a session database (a copy of the migrated template), a data set
published through the Registry Python API (``ingest`` + ``publish``), a real
uvicorn server running the gateway in a thread on a free loopback port (with
its own registry, opened by the app's lifespan, as ``serve`` would), an
in-process app for policy tests, and client helpers. Data are made once per
session because every test only reads; tests never publish into the shared
set (those that must, use ``registry`` on their own database).
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.config import Config
from tests.conftest import _fresh_database
from tests.gateway.support import (
    ACCESS_KEY,
    MANY_FILES,
    SECRET_KEY,
    DataSet,
    ThreadServer,
    free_port,
    parquet_bytes,
)

from artifactstore.config import (
    DatabaseSettings,
    GatewayCredential,
    GatewaySettings,
    SecretRef,
    Settings,
)
from artifactstore.digests import hash_bytes
from artifactstore.gateway.app import create_gateway_app
from artifactstore.manifest import ManifestFile, build_manifest
from artifactstore.registry import Registry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from mypy_boto3_s3 import S3Client
    from sqlalchemy.ext.asyncio import AsyncEngine


async def _publish(
    registry: Registry,
    data: DataSet,
    package: str,
    version: str,
    files: dict[str, tuple[bytes, str]],
) -> None:
    entries = []
    for path, (content, media_type) in files.items():
        await registry.ingest_bytes(content)
        d = hash_bytes(content)
        entries.append(ManifestFile(path, d.size, d.sha256, d.blake3, media_type))
        data.objects[(package, f"{version}/{path}")] = content
    await registry.publish(build_manifest(package, version, entries))


@pytest.fixture(scope="session")
async def gw_database_url(
    pg_admin_url: str, _pg_admin: AsyncEngine, migrated_template: str
) -> AsyncIterator[str]:
    """A migrated database of the gateway tests' own, for the whole session."""
    async with _fresh_database(pg_admin_url, _pg_admin, migrated_template) as url:
        yield url


@pytest.fixture(scope="session")
def gw_settings(tmp_path_factory: pytest.TempPathFactory, gw_database_url: str) -> Settings:
    """Settings with one credential (a ``file:`` secret) and anonymous reads on."""
    root = tmp_path_factory.mktemp("gateway")
    secret = root / "gw-secret"
    secret.write_text(SECRET_KEY + "\n", encoding="utf-8")
    cred = GatewayCredential(ACCESS_KEY, SecretRef(f"file:{secret}", "gateway.credentials[0]"))
    return Settings(
        data_dir=root / "data",
        database=DatabaseSettings(url=gw_database_url),
        gateway=GatewaySettings(credentials=(cred,)),
    )


@pytest.fixture(scope="session")
async def gw_registry(gw_settings: Settings) -> AsyncIterator[Registry]:
    """The session registry (on the session's event loop) used to publish the data set."""
    async with await Registry.open(gw_settings) as opened:
        yield opened


@pytest.fixture(scope="session")
async def dataset(gw_registry: Registry) -> DataSet:
    """Published once: ``demo`` (three versions, one yanked) and ``many`` (1205 keys)."""
    rng = random.Random(5)
    data = DataSet()
    await _publish(
        gw_registry,
        data,
        "demo",
        "1.0.0",
        {
            "README.md": (b"# demo\n" * 40, "text/markdown"),
            "dist/app.tar.gz": (rng.randbytes(300_000), "application/gzip"),
            "data/table.parquet": (parquet_bytes(), "application/vnd.apache.parquet"),
            "docs/a b+c.txt": (b"spaces and plus\n", "text/plain"),
            "docs/\u00e9t\u00e9.txt": (b"unicode\n", "text/plain"),
            "empty.txt": (b"", "text/plain"),
        },
    )
    await _publish(
        gw_registry,
        data,
        "demo",
        "2.0.0",
        {
            "README.md": (b"# demo 2\n" * 10, "text/markdown"),
            "big.bin": (rng.randbytes(9 * 1024 * 1024 + 17), "application/octet-stream"),
        },
    )
    await _publish(gw_registry, data, "demo", "0.9.0", {"old.txt": (b"old\n", "text/plain")})
    await gw_registry.yank("demo", "0.9.0", reason="test")
    data.yanked.add(("demo", "0.9.0/old.txt"))
    shared = b"same bytes in every file\n"
    many = {f"f/{i:05d}.txt": (shared, "text/plain") for i in range(MANY_FILES)}
    await _publish(gw_registry, data, "many", "1", many)
    return data


@pytest.fixture(scope="session")
async def gateway_url(gw_settings: Settings, dataset: DataSet) -> AsyncIterator[str]:
    """The base URL of a real gateway server over the published data set."""
    del dataset  # published before the server starts
    server = ThreadServer(create_gateway_app(gw_settings, host="127.0.0.1"), free_port())
    await asyncio.to_thread(server.start)
    try:
        yield server.url
    finally:
        await asyncio.to_thread(server.stop)


@pytest.fixture
def s3(gateway_url: str) -> S3Client:
    """A boto3 S3 client on the gateway (path style, signed with the test credential)."""
    return boto3.client(
        "s3",
        endpoint_url=gateway_url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
        ),
    )


@pytest.fixture
def client_env(tmp_path: Path, gateway_url: str) -> dict[str, str]:
    """Environment for CLI clients: the credential, a private HOME, no proxies."""
    import os  # noqa: PLC0415 - only here

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ARTIFACTSTORE_"))}
    env.update(
        {
            "HOME": str(home),
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1,localhost",
            "GATEWAY_URL": gateway_url,
        }
    )
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(name, None)
    return env
