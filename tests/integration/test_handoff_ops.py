"""The handoff's ``store`` and ``open`` ops (``api.handoff_ops``) against the real app.

Real PostgreSQL, real ``local`` backends and a ``postgres`` backend; the
client is ``client.handoff.HandoffClient``, malformed requests go through a
raw ``SOCK_SEQPACKET`` socket. Routes: retention class ``keep`` goes to the
local backend ``archive``, producers ``pg-*`` to the postgres backend only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
from typing import TYPE_CHECKING, Any

import blake3
import pytest
from tests.integration.handoff_support import random_file, raw_request

from artifactstore import errors
from artifactstore.api.handoff import HandoffListener
from artifactstore.api.metrics import Metrics
from artifactstore.client.errors import ServerUnreachableError
from artifactstore.client.handoff import HandoffClient, HandoffUnavailableError
from artifactstore.config import (
    DatabaseSettings,
    LocalBackendSettings,
    PostgresBackendSettings,
    Route,
    Settings,
    StorageSettings,
    UploadSettings,
)
from artifactstore.protocol import HANDOFF_SOCKET
from artifactstore.registry import Registry, Uploads

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

MIB = 1024 * 1024


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Backends ``local`` (default), ``archive`` (local) and ``pg`` (postgres), with routes."""
    return Settings(
        data_dir=tmp_path / "data",
        database=DatabaseSettings(url=database_url),
        storage=StorageSettings(
            default="local",
            backends={
                "local": LocalBackendSettings(name="local", root=tmp_path / "blobs"),
                "archive": LocalBackendSettings(name="archive", root=tmp_path / "archive"),
                "pg": PostgresBackendSettings(name="pg", block_size=MIB),
            },
            routes=(
                Route(backends=("archive",), retention_class="keep"),
                Route(backends=("pg",), producer="pg-*"),
            ),
        ),
    )


@pytest.fixture
async def client(api: httpx.AsyncClient, settings: Settings) -> HandoffClient:
    """A handoff client of the app's listener, named as ``GET /v1/uploads/handoff`` names it."""
    named = (await api.get("/v1/uploads/handoff")).json()
    assert named["socket"] == str(settings.data_dir / HANDOFF_SOCKET)
    return HandoffClient(named["socket"], named["server"])


def _digests(data: bytes) -> dict[str, Any]:
    return {
        "sha256": "sha256:" + hashlib.sha256(data).hexdigest(),
        "blake3": "blake3:" + blake3.blake3(data).hexdigest(),
        "size": len(data),
    }


async def _events(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await api.get("/v1/events", params={"limit": 1000})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _staged(settings: Settings) -> list[str]:
    return sorted(p.name for p in settings.staging_dir.iterdir())


async def _drained(settings: Settings) -> None:
    """Wait until the staging dir is empty (fails after 60 s; never a timing assertion)."""
    for _ in range(6000):
        if not _staged(settings):
            return
        await asyncio.sleep(0.01)
    assert _staged(settings) == []


async def test_store_hashes_the_file_and_records_the_blob_as_the_handoff_uid(
    api: httpx.AsyncClient, client: HandoffClient, settings: Settings, tmp_path: Path
) -> None:
    """A stored file answers both digests, is readable over REST and has one event."""
    src = random_file(tmp_path, 9 * MIB + 17)
    data = src.read_bytes()
    answer = await client.store(src, len(data))
    assert answer == {"blob": _digests(data), "created": True}
    got = await api.get(f"/v1/blobs/{answer['blob']['sha256']}")
    assert got.content == data
    stored = [e for e in await _events(api) if e["type"] == "v1.blob.stored"]
    assert len(stored) == 1
    assert stored[0]["actor"] == f"handoff:uid={os.geteuid()}"
    assert stored[0]["payload"]["backend"] == "local"
    assert _staged(settings) == []
    assert 'route="/v1/blobs",status="200"' in (await api.get("/metrics")).text


async def test_storing_the_same_bytes_again_creates_and_records_nothing(
    api: httpx.AsyncClient, client: HandoffClient, settings: Settings, tmp_path: Path
) -> None:
    """The second store of equal bytes answers created=false and adds no event."""
    src = random_file(tmp_path, 3 * MIB)
    first = await client.store(src, 3 * MIB)
    before = await _events(api)
    again = await client.store(src, 3 * MIB)
    assert again == {"blob": first["blob"], "created": False}
    assert await _events(api) == before
    await _drained(settings)  # the staged bytes are removed in the background


async def test_an_empty_file_is_a_blob_too(
    api: httpx.AsyncClient, client: HandoffClient, tmp_path: Path
) -> None:
    """Zero bytes store as the empty blob."""
    src = random_file(tmp_path, 0)
    answer = await client.store(src, 0)
    assert answer == {"blob": _digests(b""), "created": True}


async def test_store_routes_by_retention_class_and_producer(
    api: httpx.AsyncClient, client: HandoffClient, tmp_path: Path
) -> None:
    """Labels pick the backends as for a finalized session."""
    kept = await client.store(random_file(tmp_path, MIB, "a"), MIB, retention_class="keep")
    in_pg = await client.store(random_file(tmp_path, MIB, "b"), MIB, producer="pg-builds")
    for answer, backend in ((kept, "archive"), (in_pg, "pg")):
        blob = (await api.get(f"/v1/blobs/{answer['blob']['sha256']}/info")).json()
        assert [loc["backend"] for loc in blob["locations"]] == [backend], blob


async def test_a_file_shorter_than_the_length_is_a_size_mismatch_and_leaves_nothing(
    api: httpx.AsyncClient, client: HandoffClient, settings: Settings, tmp_path: Path
) -> None:
    """A length beyond the file's end stores nothing, records nothing, stages nothing."""
    src = random_file(tmp_path, 2 * MIB)
    before = await _events(api)
    with pytest.raises(errors.SizeMismatchError):
        await client.store(src, 2 * MIB + 1)
    assert await _events(api) == before
    assert _staged(settings) == []


async def test_a_file_truncated_while_read_is_a_size_mismatch_and_leaves_nothing(
    registry: Registry, settings: Settings, tmp_path: Path
) -> None:
    """A file that shrinks under the server's reads ends the store with nothing kept."""
    listener = HandoffListener(tmp_path / "h.sock", Uploads(registry), Metrics())
    listener.start()
    size = 768 * MIB
    src = tmp_path / "zeros.bin"
    with src.open("wb") as fh:
        fh.truncate(size)  # sparse: read at memory speed
    try:
        task = asyncio.create_task(
            HandoffClient(str(listener.path), listener.server_id).store(src, size)
        )
        while not any(p.stat().st_size for p in settings.staging_dir.iterdir()):
            assert not task.done(), task
            await asyncio.sleep(0.001)
        os.truncate(src, MIB)
        with pytest.raises(errors.SizeMismatchError) as caught:
            await task
        assert "ended" in caught.value.message
    finally:
        await listener.stop()
    assert _staged(settings) == []
    async with registry.engine.connect() as conn:
        assert (await conn.exec_driver_sql("SELECT count(*) FROM events")).scalar() == 0


async def test_only_a_regular_file_can_be_stored(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    """A pipe is refused before anything is read."""
    named = (await api.get("/v1/uploads/handoff")).json()
    path = str(settings.data_dir / HANDOFF_SOCKET)
    message = json.dumps({"op": "store", "server": named["server"], "length": 10}).encode()
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"0123456789")
        answer = await asyncio.to_thread(raw_request, path, message, [read_end])
    finally:
        os.close(read_end)
        os.close(write_end)
    assert answer["status"] == 400, answer
    assert "only regular files" in answer["error"]["message"]
    assert _staged(settings) == []


@pytest.mark.parametrize("op", ["store", "append"])
async def test_a_write_only_descriptor_gets_a_400_answer(
    api: httpx.AsyncClient, settings: Settings, tmp_path: Path, op: str
) -> None:
    """A file handed open for writing only is answered 400 (not a silently closed socket)."""
    named = (await api.get("/v1/uploads/handoff")).json()
    session = (await api.post("/v1/uploads", json={})).json()["id"]
    message = json.dumps(
        {"op": op, "server": named["server"], "upload": session, "offset": 0, "length": 10}
    ).encode()
    target = tmp_path / "write-only"
    target.write_bytes(b"0123456789")
    fd = os.open(target, os.O_WRONLY)
    try:
        path = str(settings.data_dir / HANDOFF_SOCKET)
        answer = await asyncio.to_thread(raw_request, path, message, [fd])
    finally:
        os.close(fd)
    assert answer["status"] == 400, answer
    assert "writing only" in answer["error"]["message"]
    assert [p.stat().st_size for p in settings.staging_dir.iterdir()] in ([], [0])
    assert (await api.head(f"/v1/uploads/{session}")).headers["upload-offset"] == "0"


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        ({"op": "store"}, "length is an integer"),
        ({"op": "store", "length": -1}, "length is an integer"),
        ({"op": "store", "length": 1, "producer": "bad label"}, "producer must match"),
        ({"op": "store", "length": 1, "retention_class": 3}, "retention_class must match"),
        ({"op": "nothing"}, "unknown handoff op"),
    ],
)
async def test_malformed_store_requests_get_a_400(
    api: httpx.AsyncClient, settings: Settings, tmp_path: Path, request_: Any, expected: str
) -> None:
    """Each field is checked before the file is read."""
    src = random_file(tmp_path, 1)
    with src.open("rb") as fh:
        answer = await asyncio.to_thread(
            raw_request,
            str(settings.data_dir / HANDOFF_SOCKET),
            json.dumps(request_).encode(),
            [fh.fileno()],
        )
    assert answer["status"] == 400, answer
    assert expected in answer["error"]["message"]


async def test_a_blob_beyond_the_maximum_size_is_413(settings: Settings, tmp_path: Path) -> None:
    """The server's maximum blob size applies to a store."""
    small = dataclasses.replace(settings, uploads=UploadSettings(max_blob_bytes=MIB))
    async with await Registry.open(small) as registry:
        listener = HandoffListener(tmp_path / "h.sock", Uploads(registry), Metrics())
        listener.start()
        try:
            with pytest.raises(errors.TooLargeError):
                await HandoffClient(str(listener.path), listener.server_id).store(
                    random_file(tmp_path, MIB + 1), MIB + 1
                )
        finally:
            await listener.stop()
    assert _staged(settings) == []


async def test_open_passes_a_descriptor_whose_bytes_match_the_digests(
    api: httpx.AsyncClient, client: HandoffClient, tmp_path: Path
) -> None:
    """The descriptor reads the stored bytes, read-only."""
    src = random_file(tmp_path, 5 * MIB + 3)
    data = src.read_bytes()
    stored = await client.store(src, len(data))
    fd, info = await client.open_blob(stored["blob"]["sha256"].removeprefix("sha256:"))
    try:
        with os.fdopen(os.dup(fd), "rb") as fh:
            got = fh.read()
        assert os.fstat(fd).st_size == len(data)
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.write(fd, b"x")
    finally:
        os.close(fd)
    assert info == _digests(got) == _digests(data)


async def test_open_of_an_unknown_blob_is_404(
    api: httpx.AsyncClient, client: HandoffClient
) -> None:
    """A blob never stored is blob_not_found."""
    with pytest.raises(errors.BlobNotFoundError):
        await client.open_blob(hashlib.sha256(b"never stored").hexdigest())


async def test_open_of_a_blob_held_only_on_postgres_is_not_local(
    api: httpx.AsyncClient, client: HandoffClient, tmp_path: Path
) -> None:
    """Without a local file the answer is 409 not_local (the client falls back to HTTP)."""
    stored = await client.store(random_file(tmp_path, MIB), MIB, producer="pg-x")
    with pytest.raises(errors.NotLocalError) as caught:
        await client.open_blob(stored["blob"]["sha256"].removeprefix("sha256:"))
    assert caught.value.detail["http_status"] == 409
    assert caught.value.detail["backends"] == ["pg"]


@pytest.mark.parametrize(
    "sha256",
    ["A" * 64, "a" * 63, "sha256:" + "a" * 64, "a" * 64 + "\n", 7],
)
async def test_open_validates_the_hex_strictly(
    api: httpx.AsyncClient, settings: Settings, sha256: object
) -> None:
    """Only 64 lowercase hex characters name a blob."""
    message = json.dumps({"op": "open", "sha256": sha256}).encode()
    answer = await asyncio.to_thread(
        raw_request, str(settings.data_dir / HANDOFF_SOCKET), message, []
    )
    assert answer["status"] == 400, answer


async def test_open_refuses_a_descriptor_sent_with_it(
    api: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    """An open request carries no descriptor."""
    message = json.dumps({"op": "open", "sha256": "a" * 64}).encode()
    with random_file(tmp_path, 1).open("rb") as fh:
        answer = await asyncio.to_thread(
            raw_request, str(settings.data_dir / HANDOFF_SOCKET), message, [fh.fileno()]
        )
    assert "carries no file descriptor" in answer["error"]["message"]


async def test_a_store_cancelled_by_shutdown_leaves_nothing(
    registry: Registry, settings: Settings, tmp_path: Path
) -> None:
    """Stopping the listener past its grace ends a store in flight with nothing kept."""
    listener = HandoffListener(tmp_path / "h.sock", Uploads(registry), Metrics())
    listener.start()
    size = 768 * MIB
    src = tmp_path / "zeros.bin"
    with src.open("wb") as fh:
        fh.truncate(size)
    task = asyncio.create_task(
        HandoffClient(str(listener.path), listener.server_id).store(src, size)
    )
    while not any(p.stat().st_size for p in settings.staging_dir.iterdir()):
        assert not task.done(), task
        await asyncio.sleep(0.001)
    await listener.stop(grace=0)
    with pytest.raises(ServerUnreachableError):
        await task
    assert _staged(settings) == []
    async with registry.engine.connect() as conn:
        assert (await conn.exec_driver_sql("SELECT count(*) FROM events")).scalar() == 0


async def test_store_and_open_refuse_a_request_for_another_server(
    client: HandoffClient, tmp_path: Path
) -> None:
    """A socket reached under another server's id (two servers, one data dir) stores nothing."""
    src = tmp_path / "f.bin"
    src.write_bytes(b"x" * 1000)
    for server in ("0" * 32, None):
        other = HandoffClient(client.path, server)
        with pytest.raises(HandoffUnavailableError, match="another server"):
            await other.store(src, 1000)
        with pytest.raises(HandoffUnavailableError, match="another server"):
            await other.open_blob(hashlib.sha256(b"x" * 1000).hexdigest())
    stored = await client.store(src, 1000)
    assert stored["created"] is True  # nothing was stored by the refused requests


async def test_a_deeply_nested_message_is_answered_400(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    """JSON nested past the parser's recursion gets an answer, not a dropped connection."""
    assert api is not None
    message = ("[" * 2000 + "]" * 2000).encode()
    path = str(settings.data_dir / HANDOFF_SOCKET)
    answer = await asyncio.to_thread(raw_request, path, message, [])
    assert answer["status"] == 400, answer
