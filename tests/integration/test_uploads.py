"""Upload sessions through the registry's Python API, with a backend that fails."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from artifactstore.config import LocalBackendSettings
from artifactstore.digests import hash_bytes
from artifactstore.errors import BackendUnavailableError, DigestMismatchError, UploadNotFoundError
from artifactstore.registry import Registry, Uploads, UploadSession
from artifactstore.registry.uploads import ORPHAN_GRACE_SECONDS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_finalize_keeps_the_session_when_the_backend_fails(registry: Registry) -> None:
    """A backend failure at finalize leaves the session and its bytes; the retry succeeds."""
    uploads = Uploads(registry)
    data = b"keep me" * 1000
    d = hash_bytes(data)
    session = await uploads.create(size=len(data), actor="t")
    assert isinstance(session, UploadSession)
    await uploads.append(session.id, 0, _body(data))
    local = registry.settings.effective_storage.backends["local"]
    assert isinstance(local, LocalBackendSettings)
    blobs = local.root
    shutil.rmtree(blobs)
    blobs.write_bytes(b"not a directory")  # the backend cannot create its tree now
    with pytest.raises(BackendUnavailableError):
        await uploads.finalize(session.id, sha256=d.sha256, blake3=d.blake3, actor="t")
    assert (await uploads.get(session.id)).offset == len(data)
    blobs.unlink()
    blobs.mkdir()
    blob = await uploads.finalize(session.id, sha256=d.sha256, blake3=d.blake3, actor="t")
    assert blob.sha256 == d.sha256
    assert await (await registry.open_blob(d.sha256)).read_all() == data
    with pytest.raises(UploadNotFoundError):
        await uploads.get(session.id)


async def test_finalize_mismatch_ends_the_session(registry: Registry) -> None:
    """A wrong digest at finalize removes the session and its bytes and stores nothing."""
    uploads = Uploads(registry)
    session = await uploads.create(actor="t")
    assert isinstance(session, UploadSession)
    await uploads.append(session.id, 0, _body(b"abc"))
    wrong = hash_bytes(b"abd")
    with pytest.raises(DigestMismatchError):
        await uploads.finalize(session.id, sha256=wrong.sha256, actor="t")
    with pytest.raises(UploadNotFoundError):
        await uploads.get(session.id)
    assert list(registry.staging.root.iterdir()) == []
    assert await registry.find_blob(hash_bytes(b"abc").sha256) is None


async def test_expiry_removes_sessions_their_bytes_and_old_orphans(registry: Registry) -> None:
    """Expired sessions and staged files no session owns (past the grace) are removed."""
    uploads = Uploads(registry)
    session = await uploads.create(actor="t")
    assert isinstance(session, UploadSession)
    await uploads.append(session.id, 0, _body(b"staged"))
    orphan = uploads.staging.root / f"upload-{uuid.uuid4().hex}"
    orphan.write_bytes(b"left by a crash")
    young = uploads.staging.root / f"upload-{uuid.uuid4().hex}"
    young.write_bytes(b"a session being created right now")
    old = time.time() - ORPHAN_GRACE_SECONDS - 60
    os.utime(orphan, (old, old))
    assert await uploads.expire(now=datetime.now(UTC)) == 0
    assert uploads.path(session.id).exists()
    assert not orphan.exists()
    assert young.exists()
    later = datetime.now(UTC) + timedelta(seconds=registry.settings.uploads.expiry_seconds + 1)
    assert await uploads.expire(now=later) == 1
    assert not uploads.path(session.id).exists()
    with pytest.raises(UploadNotFoundError):
        await uploads.get(session.id)


async def test_sweep_removes_only_stale_ingest_files(registry: Registry) -> None:
    """Staging.sweep drops crashed ingests' files but not one being written now."""
    stale = registry.staging.new_path()
    stale.write_bytes(b"x")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    fresh = registry.staging.new_path()
    fresh.write_bytes(b"y")
    assert registry.staging.sweep(older_than_seconds=3600) == 1
    assert not stale.exists()
    assert fresh.exists()
