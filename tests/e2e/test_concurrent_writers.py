"""Several real server processes appending to one log: a linear chain, one event per copy."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import Counter
from typing import TYPE_CHECKING

import blake3
import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from artifactstore.events import BlobStored, iter_events, verify_chain

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.e2e.serverproc import Server

SERVERS = 3
CLIENTS_PER_SERVER = 4
PUBLISHES_PER_CLIENT = 6
SHARED_BLOB = b"one blob, uploaded by every client at once\n" * 100


def _shared_local_config(tmp_path: Path) -> Path:
    """A config whose ``local`` backend is one directory for every server (as on shared storage)."""
    root = tmp_path / "shared-blobs"
    root.mkdir()
    config = tmp_path / "shared.toml"
    config.write_text(
        '[storage]\ndefault = "local"\n\n'
        f'[storage.backends.local]\ntype = "local"\nroot = "{root}"\n'
    )
    return config


async def _upload(client: httpx.AsyncClient, data: bytes) -> str:
    """One blob through an upload session (create, PATCH, PUT); its sha256 hex."""
    sha = hashlib.sha256(data).hexdigest()
    created = await client.post("/v1/uploads", json={"size": len(data)})
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    patched = await client.patch(
        location,
        content=data,
        headers={"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    )
    assert patched.status_code == 204, patched.text
    done = await client.put(location, params={"sha256": sha})
    assert done.status_code == 201, done.text
    return sha


async def _client(server: Server, index: int) -> None:
    """Uploads the shared blob, then publishes versions of fresh blobs, as fast as it can."""
    headers = {"Authorization": f"Bearer {server.env['ARTIFACTSTORE_TOKEN']}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as client:
        await _upload(client, SHARED_BLOB)
        for j in range(PUBLISHES_PER_CLIENT):
            data = os.urandom(4096)
            sha = await _upload(client, data)
            manifest = {
                "schema": "artifactstore.manifest/v1",
                "package": "race",
                "version": f"{server.port}.{index}.{j}",
                "files": [
                    {
                        "path": "f.bin",
                        "size": len(data),
                        "sha256": sha,
                        "blake3": blake3.blake3(data).hexdigest(),
                        "media_type": "application/octet-stream",
                    }
                ],
            }
            url = f"/v1/packages/race/versions/{server.port}.{index}.{j}"
            published = await client.put(url, json=manifest)
            assert published.status_code == 201, published.text


async def test_servers_appending_at_once_keep_one_linear_chain(
    start_server: Callable[..., Server], tmp_path: Path, database_url: str
) -> None:
    """Three servers taking uploads and publishes at once keep seq gapless and the chain linear.

    Every client also uploads one shared blob: it is recorded by exactly one
    ``v1.blob.stored`` (the check under the log lock), whichever server won.
    """
    config = _shared_local_config(tmp_path)
    servers = [start_server(config=config) for _ in range(SERVERS)]
    await asyncio.gather(
        *(_client(server, i) for server in servers for i in range(CLIENTS_PER_SERVER))
    )
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            report = await verify_chain(conn)
            seqs = list(
                (await conn.execute(sa.text("SELECT seq FROM events ORDER BY seq"))).scalars()
            )
            stored: Counter[tuple[bytes, str]] = Counter()
            async for event in iter_events(conn):
                data = event.data()
                if isinstance(data, BlobStored):
                    stored[data.sha256, data.backend] += 1
            published = await conn.scalar(
                sa.text("SELECT count(*) FROM events WHERE type = 'v1.package.published'")
            )
    finally:
        await engine.dispose()
    assert seqs == list(range(1, report.count + 1))
    assert published == SERVERS * CLIENTS_PER_SERVER * PUBLISHES_PER_CLIENT
    shared = (hashlib.sha256(SHARED_BLOB).digest(), "local")
    assert stored[shared] == 1
    assert set(stored.values()) == {1}
