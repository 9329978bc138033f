"""Database-staged upload sessions: every call may reach another replica (docs/design/0007).

Two ``Registry`` instances with their own data dirs on one PostgreSQL are two
replicas; the blob's only target is the ``postgres`` backend, so sessions
stage in ``upload_parts``. Each interleaving that matters is forced with
events, not hoped for.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from artifactstore.config import (
    DatabaseSettings,
    LocalBackendSettings,
    PostgresBackendSettings,
    Settings,
    StorageSettings,
)
from artifactstore.db.advisory import session_key, try_hold
from artifactstore.db.tables import upload_parts, upload_sessions
from artifactstore.digests import hash_bytes
from artifactstore.errors import (
    ConflictError,
    DigestMismatchError,
    UploadNotFoundError,
    UploadOffsetMismatchError,
)
from artifactstore.registry import Registry, Uploads, UploadSession
from artifactstore.registry.finalize import Intent
from artifactstore.registry.uploads import ORPHAN_GRACE_SECONDS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable
    from pathlib import Path

MIB = 1024 * 1024


def _settings(root: Path, database_url: str, *, default: str = "pg") -> Settings:
    return Settings(
        data_dir=root / "data",
        database=DatabaseSettings(url=database_url),
        storage=StorageSettings(
            default=default,
            backends={
                "pg": PostgresBackendSettings(name="pg", block_size=MIB),
                "local": LocalBackendSettings(name="local", root=root / "blobs"),
            },
        ),
    )


@pytest.fixture
async def replicas(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[Uploads, Uploads]]:
    """Two replicas' upload services on one database, each with its own data dir."""
    a = await Registry.open(_settings(tmp_path / "a", database_url))
    b = await Registry.open(_settings(tmp_path / "b", database_url))
    try:
        yield Uploads(a), Uploads(b)
    finally:
        await a.aclose()
        await b.aclose()


async def _body(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def _open(uploads: Uploads, size: int | None = None) -> UploadSession:
    session = await uploads.create(size=size, actor="t")
    assert isinstance(session, UploadSession)
    return session


async def _parts(uploads: Uploads) -> int:
    async with uploads.engine.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(upload_parts)) or 0)


def _staged_files(uploads: Uploads) -> Iterable[str]:
    return sorted(p.name for p in uploads.staging.root.glob("*") if not p.name.endswith(".lock"))


async def test_every_call_of_a_session_on_another_replica(
    replicas: tuple[Uploads, Uploads],
) -> None:
    """POST on A, PATCH on B, HEAD on A, PATCH on A, PUT on B: one blob, both digests right."""
    a, b = replicas
    first, second = b"x" * (3 * MIB + 17), b"y" * (2 * MIB + 5)
    data = first + second
    d = hash_bytes(data)
    session = await _open(a, len(data))
    assert await b.append(session.id, 0, _body(first)) == len(first)
    assert (await a.get(session.id)).offset == len(first)
    with pytest.raises(UploadOffsetMismatchError):
        await a.append(session.id, 0, _body(b"again"))
    assert await a.append(session.id, len(first), _body(second)) == len(data)
    blob = await b.finalize(session.id, sha256=d.sha256, blake3=d.blake3, actor="t")
    assert (blob.sha256, blob.blake3, blob.size) == (d.sha256, d.blake3, d.size)
    assert await (await a.registry.open_blob(d.sha256)).read_all() == data
    with pytest.raises(UploadNotFoundError):
        await a.get(session.id)
    assert await _parts(a) == 0
    assert list(_staged_files(a)) == list(_staged_files(b)) == []


async def test_a_dropped_connection_keeps_every_committed_piece(
    replicas: tuple[Uploads, Uploads],
) -> None:
    """A PATCH cut off mid-body keeps the whole pieces it committed; another replica resumes."""
    a, b = replicas
    data = bytes(range(256)) * (4 * MIB // 256)
    session = await _open(a)

    async def cut_off() -> AsyncIterator[bytes]:
        for i in range(3):
            yield data[i * MIB : (i + 1) * MIB]
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await a.append(session.id, 0, cut_off())
    assert (await b.get(session.id)).offset == 3 * MIB
    assert await b.append(session.id, 3 * MIB, _body(data[3 * MIB :])) == len(data)
    d = hash_bytes(data)
    blob = await a.finalize(session.id, sha256=d.sha256, actor="t")
    assert await (await b.registry.open_blob(blob.sha256)).read_all() == data


async def test_two_appends_at_one_offset_cannot_both_land(
    replicas: tuple[Uploads, Uploads],
) -> None:
    """A second writer at an offset the first already took gets 409, and no byte overlaps."""
    a, b = replicas
    session = await _open(a)
    go = asyncio.Event()

    async def late() -> AsyncIterator[bytes]:
        await go.wait()
        yield b"L" * MIB

    slow = asyncio.create_task(a.append(session.id, 0, late()))
    await asyncio.sleep(0.2)  # the slow append has checked offset 0 and waits for its body
    assert await b.append(session.id, 0, _body(b"F" * MIB)) == MIB
    go.set()
    with pytest.raises(ConflictError):
        await slow
    data = b"F" * MIB
    blob = await a.finalize(session.id, sha256=hash_bytes(data).sha256, actor="t")
    assert await (await a.registry.open_blob(blob.sha256)).read_all() == data


async def test_a_claimed_session_is_frozen_and_finished_by_any_replica(
    replicas: tuple[Uploads, Uploads],
) -> None:
    """A finalize died after claiming: appends get 409; a PUT on another replica completes."""
    a, b = replicas
    data = b"claimed" * 100_000
    d = hash_bytes(data)
    session = await _open(a)
    await a.append(session.id, 0, _body(data))
    intent = Intent(d, ("pg",), "t")
    assert await a.shared.parts.claim(session.id, len(data), intent.encode())  # then "dies"
    with pytest.raises(ConflictError):
        await b.append(session.id, len(data), _body(b"more"))
    with pytest.raises(ConflictError):
        await b.abort(session.id)
    assert (await b.get(session.id)).offset == len(data)
    blob = await b.finalize(session.id, blake3=d.blake3, actor="t")
    assert blob.sha256 == d.sha256
    assert await (await a.registry.open_blob(d.sha256)).read_all() == data
    assert await _parts(a) == 0


async def test_a_claim_refuses_bytes_that_grew_after_hashing(
    replicas: tuple[Uploads, Uploads],
) -> None:
    """The claim re-reads the end under the row lock: a piece after the hash voids it."""
    a, b = replicas
    session = await _open(a)
    await a.append(session.id, 0, _body(b"abc"))
    await b.append(session.id, 3, _body(b"def"))
    assert not await a.shared.parts.claim(
        session.id, 3, Intent(hash_bytes(b"abc"), (), "t").encode()
    )
    assert await a.shared.parts.claim(
        session.id, 6, Intent(hash_bytes(b"abcdef"), (), "t").encode()
    )


async def test_a_second_finalize_while_one_runs_is_refused(
    replicas: tuple[Uploads, Uploads],
) -> None:
    """While a replica holds the session's finalize lock, a PUT elsewhere gets 409."""
    a, b = replicas
    session = await _open(a)
    await a.append(session.id, 0, _body(b"abc"))
    async with try_hold(a.engine, session_key(session.id)) as held:
        assert held
        with pytest.raises(ConflictError):
            await b.finalize(session.id, sha256=hash_bytes(b"abc").sha256, actor="t")
    blob = await b.finalize(session.id, sha256=hash_bytes(b"abc").sha256, actor="t")
    assert blob.size == 3


async def test_a_mismatch_ends_the_session_and_its_parts(
    replicas: tuple[Uploads, Uploads],
) -> None:
    """A wrong digest stores nothing and removes the staged pieces."""
    a, b = replicas
    session = await _open(a)
    await a.append(session.id, 0, _body(b"abc"))
    with pytest.raises(DigestMismatchError):
        await b.finalize(session.id, sha256=hash_bytes(b"abd").sha256, actor="t")
    assert await _parts(a) == 0
    with pytest.raises(UploadNotFoundError):
        await a.get(session.id)


async def test_expiry_finishes_an_abandoned_claim_and_drops_the_rest(
    replicas: tuple[Uploads, Uploads],
) -> None:
    """Expired: a claimed session's blob is stored and recorded; an unclaimed one just goes."""
    a, b = replicas
    data = b"finish me" * 1000
    d = hash_bytes(data)
    claimed, dropped = await _open(a), await _open(a)
    await a.append(claimed.id, 0, _body(data))
    await a.append(dropped.id, 0, _body(b"never finalized"))
    assert await a.shared.parts.claim(claimed.id, len(data), Intent(d, ("pg",), "t").encode())
    await b.expire(datetime.now(UTC) + timedelta(days=2))
    assert await (await a.registry.open_blob(d.sha256)).read_all() == data
    async with a.engine.connect() as conn:
        left = await conn.scalar(sa.select(sa.func.count()).select_from(upload_sessions))
    assert left == 0
    assert await _parts(a) == 0


async def test_a_local_target_keeps_local_staging(tmp_path: Path, database_url: str) -> None:
    """A session for a ``local`` backend stages in this server's data dir, as before."""
    async with await Registry.open(_settings(tmp_path, database_url, default="local")) as reg:
        uploads = Uploads(reg)
        session = await _open(uploads)
        assert uploads.path(session.id).exists()
        await uploads.append(session.id, 0, _body(b"abc"))
        assert await _parts(uploads) == 0


async def test_each_replica_sweeps_its_own_staging_after_another_expired_the_row(
    tmp_path: Path, database_url: str
) -> None:
    """Replica B expires A's locally staged session; A's ``sweep_local`` removes A's file."""
    a_reg = await Registry.open(_settings(tmp_path / "a", database_url, default="local"))
    b_reg = await Registry.open(_settings(tmp_path / "b", database_url, default="local"))
    try:
        a, b = Uploads(a_reg), Uploads(b_reg)
        session = await _open(a)
        await a.append(session.id, 0, _body(b"left behind"))
        assert await b.expire(datetime.now(UTC) + timedelta(days=2)) == 1
        staged = a.path(session.id)
        old = staged.stat().st_mtime - ORPHAN_GRACE_SECONDS - 1
        os.utime(staged, (old, old))
        assert staged.exists()
        await a.sweep_local()
        assert not staged.exists()
    finally:
        await a_reg.aclose()
        await b_reg.aclose()
