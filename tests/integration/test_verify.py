"""Storage verify and replicate on a registry with two real backends: local and postgres.

Bytes are damaged, removed and planted behind the registry's back (a file
rewritten on disk, a block updated by SQL), then ``verify_storage``,
``replicate`` and the ``storage`` CLI are checked for what they report, what
they append to the log and what the views say afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from artifactstore.cli.main import exit_code_for
from artifactstore.cli.storage import storage_app
from artifactstore.config import (
    DatabaseSettings,
    LocalBackendSettings,
    PostgresBackendSettings,
    Route,
    Settings,
    StorageSettings,
)
from artifactstore.db.tables import events, storage_locations
from artifactstore.digests import hash_bytes
from artifactstore.errors import ConfigError
from artifactstore.events import EventType
from artifactstore.registry import Registry
from artifactstore.registry.replicate import replicate
from artifactstore.registry.verify import VerifyProgress, verify_storage
from artifactstore.storage.local import LocalBackend
from artifactstore.views import LocationState

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from pathlib import Path

    from artifactstore.digests import Digest

MIB = 1024 * 1024
ACTOR = "test:verify"
BOTH = "both"  # the retention class routed to both backends


def blob(size: int, seed: int) -> bytes:
    """Deterministic pseudo-random bytes."""
    return hashlib.shake_256(f"verify-{seed}".encode()).digest(size)


def two_backend_settings(tmp_path: Path, database_url: str) -> Settings:
    """Backends local (the default) and pg; retention class "both" routes to both."""
    return Settings(
        data_dir=tmp_path / "data",
        database=DatabaseSettings(url=database_url),
        storage=StorageSettings(
            default="local",
            backends={
                "local": LocalBackendSettings(name="local", root=tmp_path / "blobs"),
                "pg": PostgresBackendSettings(name="pg", block_size=MIB),
            },
            routes=(Route(backends=("local", "pg"), retention_class=BOTH),),
        ),
    )


@pytest.fixture
async def registry2(tmp_path: Path, database_url: str) -> AsyncIterator[Registry]:
    """An open registry with a local and a postgres backend."""
    async with await Registry.open(two_backend_settings(tmp_path, database_url)) as opened:
        yield opened


async def ingest(registry: Registry, data: bytes, *, both: bool = True) -> Digest:
    """Store ``data`` (on both backends unless told otherwise) and return its sha256."""
    record = await registry.ingest_bytes(data, retention_class=BOTH if both else None)
    return record.sha256


def local_path(registry: Registry, sha: Digest) -> Path:
    """The file of the local copy."""
    backend = registry.store.backends["local"]
    assert isinstance(backend, LocalBackend)
    return backend.path_for(sha)


def flip_local_byte(registry: Registry, sha: Digest, offset: int) -> None:
    """Invert one byte of the local copy on disk."""
    path = local_path(registry, sha)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


async def flip_pg_byte(registry: Registry, sha: Digest, block_no: int, offset: int) -> None:
    """Invert one byte of one postgres block by SQL."""
    async with registry.engine.begin() as conn:
        result = await conn.execute(
            sa.text(
                "UPDATE blob_blocks SET data = set_byte(data, :i, 255 - get_byte(data, :i))"
                " WHERE backend = 'pg' AND sha256 = :s AND block_no = :b"
            ),
            {"i": offset, "s": sha.raw, "b": block_no},
        )
        assert result.rowcount == 1


async def states(registry: Registry) -> dict[tuple[str, str], str]:
    """Every location's state by (sha256 hex, backend)."""
    async with registry.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(
                storage_locations.c.sha256, storage_locations.c.backend, storage_locations.c.state
            )
        )
        return {(bytes(r.sha256).hex(), r.backend): r.state for r in rows}


async def event_count(registry: Registry, kind: EventType) -> int:
    """How many events of one type the log holds."""
    async with registry.engine.connect() as conn:
        n = await conn.scalar(sa.select(sa.func.count()).where(events.c.type == str(kind)))
        return int(n or 0)


async def verify(registry: Registry, backends: Sequence[str] | None = None) -> object:
    """verify_storage with the test actor."""
    return await verify_storage(registry, backends=backends, actor=ACTOR)


async def test_corruption_is_found_recorded_read_around_and_cleared(registry2: Registry) -> None:
    """Flipped bytes fail verify per backend, reads use the other copy, restoring clears it."""
    datas = [blob(3 * MIB + 5, 1), blob(2 * MIB, 2), blob(1000, 3), b""]
    shas = [await ingest(registry2, d) for d in datas]
    seen: list[VerifyProgress] = []

    report = await verify_storage(registry2, actor=ACTOR, progress=seen.append, concurrency=3)
    assert report.ok
    assert (report.checked, report.verified, report.failed) == (8, 8, 0)
    assert report.bytes == 2 * sum(len(d) for d in datas)
    assert await event_count(registry2, EventType.LOCATION_VERIFIED) == 8
    assert set((await states(registry2)).values()) == {LocationState.VERIFIED}
    assert {p.backend for p in seen} == {"local", "pg"}

    a, b = shas[0], shas[1]
    flip_local_byte(registry2, a, 2 * MIB + 17)
    await flip_pg_byte(registry2, b, 1, 5)
    report = await verify_storage(registry2, actor=ACTOR)
    assert not report.ok
    assert (report.checked, report.verified, report.failed) == (8, 6, 2)
    assert {(f.sha256, f.backend, f.reason) for f in report.failures} == {
        (a.hex, "local", "sha256 mismatch"),
        (b.hex, "pg", "sha256 mismatch"),
    }
    assert await event_count(registry2, EventType.LOCATION_FAILED) == 2
    now = await states(registry2)
    assert now[a.hex, "local"] == LocationState.FAILED
    assert now[b.hex, "pg"] == LocationState.FAILED
    assert now[a.hex, "pg"] == LocationState.VERIFIED
    # Reads skip the failed copies and come from the good ones.
    assert await (await registry2.open_blob(a)).read_all() == datas[0]
    assert await (await registry2.open_blob(b)).read_all() == datas[1]

    flip_local_byte(registry2, a, 2 * MIB + 17)
    await flip_pg_byte(registry2, b, 1, 5)
    report = await verify_storage(registry2, actor=ACTOR)
    assert report.ok
    assert report.verified == 8
    assert set((await states(registry2)).values()) == {LocationState.VERIFIED}


async def test_size_mismatch_and_missing_and_orphans(registry2: Registry) -> None:
    """Truncated copies fail on size, removed ones are missing, planted ones are kept orphans."""
    short, gone = blob(5000, 10), blob(MIB + 1, 11)
    short_sha = await ingest(registry2, short)
    gone_sha = await ingest(registry2, gone)
    local_path(registry2, short_sha).write_bytes(short[:-1])
    assert await registry2.store.backends["pg"].delete(gone_sha)
    stray = blob(777, 12)
    stray_sha = hash_bytes(stray).sha256
    await registry2.store.backends["local"].put_stream(stray_sha, _one(stray), len(stray))

    report = await verify_storage(registry2, actor=ACTOR)
    assert not report.ok
    assert [(f.sha256, f.backend, f.reason) for f in report.failures] == [
        (short_sha.hex, "local", "size mismatch")
    ]
    assert [(f.sha256, f.backend) for f in report.missing_objects] == [(gone_sha.hex, "pg")]
    assert [(f.sha256, f.backend) for f in report.orphan_objects] == [(stray_sha.hex, "local")]
    assert await event_count(registry2, EventType.LOCATION_MISSING) == 1
    assert (await states(registry2))[gone_sha.hex, "pg"] == LocationState.MISSING
    assert await registry2.store.backends["local"].head(stray_sha) is not None

    only_pg = await verify_storage(registry2, backends=["pg"], actor=ACTOR)
    assert only_pg.backends == ("pg",)
    assert (only_pg.checked, only_pg.missing, only_pg.failed, only_pg.orphans) == (2, 1, 0, 0)


async def test_replicate_copies_missing_replicas_once(registry2: Registry) -> None:
    """Replicate copies every absent or missing replica, then has nothing left to do."""
    local_only = [blob(n, 20 + n) for n in (10, MIB + 3, 0)]
    for d in local_only:
        await ingest(registry2, d, both=False)
    repaired = blob(4000, 30)
    repaired_sha = await ingest(registry2, repaired)
    await registry2.store.backends["pg"].delete(repaired_sha)
    await verify_storage(registry2, backends=["pg"], actor=ACTOR)  # marks it missing

    report = await replicate(registry2, to="pg", actor=ACTOR)
    assert report.ok
    assert (report.checked, report.copied, report.present) == (4, 4, 0)
    assert report.bytes == sum(len(d) for d in local_only) + len(repaired)
    assert set((await states(registry2)).values()) <= {
        LocationState.STORED,
        LocationState.VERIFIED,
    }
    assert (await verify_storage(registry2, actor=ACTOR)).ok

    again = await replicate(registry2, to="pg", source="local", actor=ACTOR)
    assert (again.checked, again.copied, again.present, again.ok) == (4, 0, 4, True)


async def test_replicate_refuses_a_corrupt_source(registry2: Registry) -> None:
    """A copy whose bytes no longer match is not replicated; the failure names the blob."""
    data = blob(3000, 40)
    sha = await ingest(registry2, data, both=False)
    flip_local_byte(registry2, sha, 0)
    report = await replicate(registry2, to="pg", actor=ACTOR)
    assert not report.ok
    assert [(f.sha256, f.backend) for f in report.failures] == [(sha.hex, "pg")]
    assert "local" in report.failures[0].reason
    assert await registry2.store.backends["pg"].head(sha) is None


async def test_unknown_backend_is_refused(registry2: Registry) -> None:
    """Naming an unconfigured backend raises ConfigError before anything is checked."""
    with pytest.raises(ConfigError):
        await verify_storage(registry2, backends=["nope"], actor=ACTOR)
    with pytest.raises(ConfigError):
        await replicate(registry2, to="nope", actor=ACTOR)
    assert await event_count(registry2, EventType.LOCATION_VERIFIED) == 0


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


# -- the CLI -----------------------------------------------------------------------------


def write_config(tmp_path: Path, database_url: str) -> Path:
    """An artifactstore.toml naming the test database and both backends."""
    path = tmp_path / "artifactstore.toml"
    path.write_text(
        f"""
[database]
url = "{database_url}"

[storage]
default = "local"

[storage.backends.local]
type = "local"
root = "{tmp_path / "blobs"}"

[storage.backends.pg]
type = "postgres"

[[storage.routes]]
match = {{ retention_class = "{BOTH}" }}
backends = ["local", "pg"]
""",
        encoding="utf-8",
    )
    return path


def run_cli(args: list[str]) -> tuple[int, str]:
    """Invoke ``storage`` like ``artifactstore`` does: errors become exit codes by one table."""
    result = CliRunner().invoke(storage_app, args)
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        return exit_code_for(exc), result.stdout
    return result.exit_code, result.stdout


async def test_cli_verify_exit_codes(tmp_path: Path, database_url: str) -> None:
    """The verify command exits 0 when clean, 1 with a JSON problem list, 2 on usage, 3 if down."""
    config = write_config(tmp_path, database_url)
    settings = two_backend_settings(tmp_path, database_url)
    async with await Registry.open(settings) as registry:
        sha = await ingest(registry, blob(2 * MIB + 9, 50))

    code, out = await asyncio.to_thread(run_cli, ["verify", "--config", str(config)])
    assert code == 0, out
    assert "2 checked, 2 verified" in out

    async with await Registry.open(settings) as registry:
        await flip_pg_byte(registry, sha, 2, 0)
    code, out = await asyncio.to_thread(
        run_cli, ["verify", "--config", str(config), "--json", "--backend", "pg"]
    )
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False
    assert doc["counts"]["failed"] == 1
    assert doc["failed"] == [{"sha256": sha.hex, "backend": "pg", "reason": "sha256 mismatch"}]

    code, out = await asyncio.to_thread(run_cli, ["status", "--config", str(config), "--json"])
    assert code == 1
    status = json.loads(out)
    assert status["problems"][0]["sha256"] == sha.hex
    assert {b["name"]: b["locations"]["failed"] for b in status["backends"]} == {
        "local": 0,
        "pg": 1,
    }

    code, _ = await asyncio.to_thread(run_cli, ["verify", "--config", str(config), "-b", "nope"])
    assert code == 2

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = write_config(tmp_path, f"postgresql+asyncpg://nobody@127.0.0.1:{port}/none")
    code, _ = await asyncio.to_thread(run_cli, ["verify", "--config", str(dead)])
    assert code == 3


async def test_cli_replicate(tmp_path: Path, database_url: str) -> None:
    """The replicate command copies what is missing, then copies nothing; both exit 0."""
    config = write_config(tmp_path, database_url)
    async with await Registry.open(two_backend_settings(tmp_path, database_url)) as registry:
        await ingest(registry, blob(1234, 60), both=False)
    code, out = await asyncio.to_thread(
        run_cli, ["replicate", "--to", "pg", "--config", str(config), "--json"]
    )
    assert code == 0, out
    assert json.loads(out)["counts"]["copied"] == 1
    code, out = await asyncio.to_thread(
        run_cli, ["replicate", "--to", "pg", "--config", str(config)]
    )
    assert code == 0
    assert "0 copied" in out
