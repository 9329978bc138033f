"""Claims of finalizing sessions and owners of staged files, on a real database and filesystem.

A finalize stopped at a pause point (``artifactstore.testpoint``) and
cancelled there leaves what a killed server leaves: its locks released, its
files as they were (docs/design/0006). The e2e crash tests kill a real
server; these pin what the expiry sweep and a second request do with that.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from artifactstore.digests import hash_bytes
from artifactstore.errors import BlobNotFoundError, ConflictError
from artifactstore.events import EventType, read_events
from artifactstore.registry import Uploads
from artifactstore.registry.ingest import Staging
from artifactstore.registry.uploads import UploadSession
from artifactstore.testpoint import PAUSE_ENV

if TYPE_CHECKING:
    import uuid
    from collections.abc import AsyncIterator
    from pathlib import Path

    from artifactstore.registry import Registry

DATA = b"claimed bytes " * 1000
FAR_FUTURE = datetime.now(UTC) + timedelta(days=365)


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _session(uploads: Uploads) -> uuid.UUID:
    session = await uploads.create(actor="t")
    assert isinstance(session, UploadSession)
    await uploads.append(session.id, 0, _body(DATA))
    return session.id


async def _stop_at(
    uploads: Uploads,
    session_id: uuid.UUID,
    point: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> asyncio.Task[object]:
    """Start a finalize and return it once it waits at ``point``."""
    monkeypatch.setenv(PAUSE_ENV, point)
    task: asyncio.Task[object] = asyncio.create_task(
        uploads.finalize(session_id, sha256=hash_bytes(DATA).sha256, actor="t")
    )
    seen = ""
    deadline = time.monotonic() + 30
    while f"paused at {point}" not in seen:
        assert not task.done()
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
        seen += capsys.readouterr().err
    monkeypatch.delenv(PAUSE_ENV)
    return task


async def _crash(task: asyncio.Task[object]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _stored_events(registry: Registry) -> int:
    async with registry.engine.connect() as conn:
        events = await read_events(conn, limit=1000, types=[EventType.BLOB_STORED])
    return len(events)


def _objects(registry: Registry) -> list[str]:
    root = registry.settings.data_dir / "blobs"
    return sorted(p.name for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("point", "written"), [("finalize:claimed", False), ("finalize:stored", True)]
)
async def test_an_abandoned_claim_is_settled_at_expiry(
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    point: str,
    written: bool,
) -> None:
    """Dead at ``point``, session expired: a copy the finalize wrote is recorded once, or none."""
    uploads = Uploads(registry)
    session_id = await _session(uploads)
    await _crash(await _stop_at(uploads, session_id, point, monkeypatch, capsys))
    sha = hash_bytes(DATA).sha256
    with pytest.raises(BlobNotFoundError):
        await registry.blob(sha)
    assert await uploads.expire(now=FAR_FUTURE) == 1
    assert _objects(registry) == ([sha.hex] if written else [])
    assert await _stored_events(registry) == int(written)
    if written:
        assert (await registry.blob(sha)).size == len(DATA)
    assert list(registry.staging.root.iterdir()) == []


async def test_a_running_finalize_holds_its_session(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """While a finalize runs, a second PUT and a PATCH are busy; HEAD gives the full offset."""
    uploads = Uploads(registry)
    session_id = await _session(uploads)
    task = await _stop_at(uploads, session_id, "finalize:claimed", monkeypatch, capsys)
    try:
        with pytest.raises(ConflictError):
            await uploads.finalize(session_id, sha256=hash_bytes(DATA).sha256, actor="t")
        with pytest.raises(ConflictError):
            await uploads.append(session_id, len(DATA), _body(b"more"))
        assert (await uploads.get(session_id)).offset == len(DATA)
        await uploads.expire()  # the sweep leaves a held claim alone
        assert (await uploads.get(session_id)).offset == len(DATA)
    finally:
        await _crash(task)
    blob = await uploads.finalize(session_id, sha256=hash_bytes(DATA).sha256, actor="t")
    assert blob.size == len(DATA)
    assert await _stored_events(registry) == 1


async def test_claimed_bytes_without_an_intent_go_back_to_the_session(registry: Registry) -> None:
    """Claimed bytes whose intent was never written return to the session, which finalizes."""
    uploads = Uploads(registry)
    session_id = await _session(uploads)
    uploads.path(session_id).replace(uploads.claims.bytes_path(session_id))
    assert (await uploads.get(session_id)).offset == len(DATA)
    await uploads.expire()
    assert uploads.path(session_id).stat().st_size == len(DATA)
    blob = await uploads.finalize(session_id, sha256=hash_bytes(DATA).sha256, actor="t")
    assert blob.size == len(DATA)
    assert list(registry.staging.root.iterdir()) == []


_OWNER_SCRIPT = """
import sys, time
from pathlib import Path
from artifactstore.registry.ingest import Staging
staging = Staging(Path(sys.argv[1]))
staging.new_path().write_bytes(b"half an ingest")
print("staged", flush=True)
time.sleep(600)
"""


def test_the_sweep_removes_a_dead_owners_files_and_keeps_a_live_ones(tmp_path: Path) -> None:
    """Staged files of a killed process go at once; those of a live owner stay until it closes."""
    root = tmp_path / "staging"
    mine = Staging(root)
    live = Staging(root)
    kept = live.new_path()
    kept.write_bytes(b"in progress")
    other = subprocess.Popen(
        [sys.executable, "-c", _OWNER_SCRIPT, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout is not None
        assert other.stdout.readline().strip() == "staged"
        assert mine.sweep_dead_owners() == 0
        other.kill()
        other.wait()
        assert mine.sweep_dead_owners() == 1
        assert [p.name for p in root.iterdir()] == [kept.name]
        live.close()
        assert mine.sweep_dead_owners() == 1
        assert list(root.iterdir()) == []
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
        if other.stdout is not None:
            other.stdout.close()
        mine.close()
