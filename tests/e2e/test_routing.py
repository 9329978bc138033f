"""Three backends at once, routed by retention class, audited by ``storage verify``.

The real server and CLI with ``local``, ``postgres`` and ``s3`` (moto)
configured together: uploads land where the routes say, downloads are
byte-exact from each, one corrupted object on each backend is named by
verify, and changing the default backend moves new ingests only.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import TYPE_CHECKING

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from tests.e2e.serverproc import Server, cli

from artifactstore.digests import hash_bytes

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.conformance.s3_support import S3Endpoint

pytestmark = pytest.mark.e2e


def _config(path: Path, endpoint: S3Endpoint, bucket: str, default: str) -> Path:
    path.write_text(
        f"""
[storage]
default = "{default}"

[storage.backends.local]
type = "local"

[storage.backends.db]
type = "postgres"
block_size = 65536

[storage.backends.objects]
type = "s3"
endpoint_url = "{endpoint.url}"
region = "{endpoint.region}"
bucket = "{bucket}"
key_prefix = "routed"
access_key_ref = "env:E2E_S3_ACCESS_KEY"
secret_key_ref = "env:E2E_S3_SECRET_KEY"

[[storage.routes]]
match = {{ retention_class = "long" }}
backends = ["objects", "db"]

[[storage.routes]]
match = {{ retention_class = "short", producer = "ci-*" }}
backends = ["local"]
"""
    )
    return path


def _backends_of(server: Server, data: bytes) -> list[str]:
    sha = hash_bytes(data).sha256
    info = httpx.get(f"{server.url}/v1/blobs/{sha}/info").json()
    return sorted(loc["backend"] for loc in info["locations"] if loc["state"] == "stored")


def _publish(server: Server, tmp_path: Path, name: str, data: bytes, *options: str) -> None:
    src = tmp_path / name
    src.mkdir()
    (src / "payload.bin").write_bytes(data)
    run = cli("upload", name, "1.0", str(src), *options, env=server.client_env())
    assert run.returncode == 0, run.stderr


def _download_matches(server: Server, tmp_path: Path, name: str, data: bytes) -> None:
    out = tmp_path / f"out-{name}-{uuid.uuid4().hex[:6]}"
    run = cli("download", name, "1.0", "--output", str(out), env=server.client_env())
    assert run.returncode == 0, run.stderr
    assert (out / name / "payload.bin").read_bytes() == data


async def _flip_block(database_url: str, data: bytes) -> bytes:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            raw = hash_bytes(data).sha256.raw
            block = await conn.scalar(
                sa.text(
                    "SELECT data FROM blob_blocks WHERE backend = 'db' AND sha256 = :s"
                    " AND block_no = 0"
                ),
                {"s": raw},
            )
            assert block is not None
            original = bytes(block)
            await conn.execute(
                sa.text(
                    "UPDATE blob_blocks SET data = :d WHERE backend = 'db' AND sha256 = :s"
                    " AND block_no = 0"
                ),
                {"d": bytes([original[0] ^ 0xFF]) + original[1:], "s": raw},
            )
        return original
    finally:
        await engine.dispose()


async def _restore_block(database_url: str, data: bytes, original: bytes) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "UPDATE blob_blocks SET data = :d WHERE backend = 'db' AND sha256 = :s"
                    " AND block_no = 0"
                ),
                {"d": original, "s": hash_bytes(data).sha256.raw},
            )
    finally:
        await engine.dispose()


def test_routes_replicas_corruption_and_a_new_default(
    moto_endpoint: S3Endpoint,
    start_server: Callable[..., Server],
    database_url: str,
    tmp_path: Path,
) -> None:
    """Routes decide where blobs land; verify names corruption on each backend; defaults move."""
    bucket = f"routes-{uuid.uuid4().hex[:12]}"
    s3 = moto_endpoint.raw_client()
    s3.create_bucket(Bucket=bucket)
    secrets = {
        "E2E_S3_ACCESS_KEY": moto_endpoint.access_key,
        "E2E_S3_SECRET_KEY": moto_endpoint.secret_key,
    }
    config = _config(tmp_path / "a.toml", moto_endpoint, bucket, default="local")
    server = start_server(config=config, extra_env=secrets)
    long_data = os.urandom(300_000)
    short_data = os.urandom(200_000)
    plain_data = os.urandom(100_000)
    _publish(server, tmp_path, "archive", long_data, "--retention-class", "long")
    _publish(
        server, tmp_path, "nightly", short_data, "--retention-class", "short", "--producer", "ci-x"
    )
    _publish(server, tmp_path, "plain", plain_data)
    assert _backends_of(server, long_data) == ["db", "objects"]
    assert _backends_of(server, short_data) == ["local"]
    assert _backends_of(server, plain_data) == ["local"]
    for name, data in (("archive", long_data), ("nightly", short_data), ("plain", plain_data)):
        _download_matches(server, tmp_path, name, data)

    # One object damaged behind the registry's back on each backend.
    env = server.client_env()
    assert cli("storage", "verify", env=env).returncode == 0
    short_sha = hash_bytes(short_data).sha256.hex
    local_file = server.data_dir / "blobs" / "local" / "sha256" / short_sha[:2] / short_sha[2:4]
    local_file = local_file / short_sha
    local_original = local_file.read_bytes()
    local_file.write_bytes(b"\x00" + local_original[1:])
    block_original = asyncio.run(_flip_block(database_url, long_data))
    long_sha = hash_bytes(long_data).sha256.hex
    key = f"routed/sha256/{long_sha[:2]}/{long_sha[2:4]}/{long_sha}"
    s3.put_object(Bucket=bucket, Key=key, Body=b"rewritten" + long_data[9:])
    run = cli("storage", "verify", "--json", env=env)
    assert run.returncode == 1, run.stderr
    failed = sorted((f["backend"], f["sha256"]) for f in json.loads(run.stdout)["failed"])
    assert failed == [("db", long_sha), ("local", short_sha), ("objects", long_sha)]
    assert httpx.get(f"{server.url}/readyz").json()["status"] == "degraded"
    local_file.write_bytes(local_original)
    asyncio.run(_restore_block(database_url, long_data, block_original))
    s3.put_object(Bucket=bucket, Key=key, Body=long_data)
    assert cli("storage", "verify", env=env).returncode == 0
    assert httpx.get(f"{server.url}/readyz").json()["status"] == "ok"

    # A new default, by configuration alone: new ingests move, old blobs stay readable.
    server.stop()
    moved = _config(tmp_path / "b.toml", moto_endpoint, bucket, default="db")
    server.env["ARTIFACTSTORE_CONFIG"] = str(moved)
    server.start()
    later = os.urandom(50_000)
    _publish(server, tmp_path, "later", later)
    assert _backends_of(server, later) == ["db"]
    _download_matches(server, tmp_path, "plain", plain_data)
    _download_matches(server, tmp_path, "later", later)
