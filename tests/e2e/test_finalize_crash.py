"""Kill -9 the real server inside a finalize or a handed-over store, restart, and nothing is lost.

The server is stopped at a named point (``ARTIFACTSTORE_TEST_PAUSE_AT``,
``artifactstore.testpoint``) and killed there: after the claim, after the
backend write, after the event. On restart the session answers HEAD with its
full offset and a retried PUT stores the blob once; every object on the
backend (a local directory, a moto bucket) is recorded and staging is empty
(docs/design/0006).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import threading
import time
import uuid
from typing import TYPE_CHECKING

import httpx
import pytest
from tests.conformance.s3_support import S3Endpoint, empty_bucket

from artifactstore.testpoint import PAUSE_ENV

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from mypy_boto3_s3 import S3Client
    from tests.e2e.serverproc import Server

# Each test starts a server twice: crash/restart tests are ``slow`` (AGENTS.md).
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SIZE = 6 * 1024 * 1024 + 123
POINTS = ("finalize:claimed", "finalize:stored", "finalize:recorded")
DEADLINE_SECONDS = 60.0


class Backend:
    """The server's only backend and a way to list its objects."""

    def __init__(self, kind: str, tmp_path: Path, s3: S3Client | None, bucket: str) -> None:
        self.kind, self.tmp_path, self.s3, self.bucket = kind, tmp_path, s3, bucket
        self.config: Path | None = None
        self.env: dict[str, str] = {}

    def objects(self, server: Server) -> list[str]:
        """Every object (file or key) the backend holds, temporary ones included."""
        if self.s3 is None:
            root = server.data_dir / "blobs"
            return sorted(p.name for p in root.rglob("*") if p.is_file())
        listing = self.s3.list_objects_v2(Bucket=self.bucket)
        return sorted(o["Key"].rsplit("/", 1)[-1] for o in listing.get("Contents", []))


@contextlib.contextmanager
def _moto_bucket(moto_endpoint: S3Endpoint, tmp_path: Path) -> Iterator[Backend]:
    """A fresh bucket on the moto server as the only backend, emptied afterwards."""
    client = moto_endpoint.raw_client()
    bucket = f"crash-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    found = Backend("s3", tmp_path, client, bucket)
    found.config = tmp_path / "artifactstore.toml"
    found.config.write_text(
        f"""
[storage]
default = "objects"

[storage.backends.objects]
type = "s3"
endpoint_url = "{moto_endpoint.url}"
region = "{moto_endpoint.region}"
bucket = "{bucket}"
access_key_ref = "env:E2E_S3_ACCESS_KEY"
secret_key_ref = "env:E2E_S3_SECRET_KEY"
"""
    )
    found.env = {
        "E2E_S3_ACCESS_KEY": moto_endpoint.access_key,
        "E2E_S3_SECRET_KEY": moto_endpoint.secret_key,
    }
    try:
        yield found
    finally:
        empty_bucket(client, bucket)


@pytest.fixture(params=["local", "s3"])
def backend(
    request: pytest.FixtureRequest, moto_endpoint: S3Endpoint, tmp_path: Path
) -> Iterator[Backend]:
    """A local directory, or a fresh bucket on the moto server."""
    if request.param == "local":
        yield Backend("local", tmp_path, None, "")
        return
    with _moto_bucket(moto_endpoint, tmp_path) as found:
        yield found


@pytest.fixture
def s3_backend(moto_endpoint: S3Endpoint, tmp_path: Path) -> Iterator[Backend]:
    """A fresh bucket on the moto server: sessions on an external database stage in it."""
    with _moto_bucket(moto_endpoint, tmp_path) as found:
        yield found


def _wait_for(condition: Callable[[], bool], server: Server) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.02)


def _paused(server: Server, point: str) -> bool:
    return f"paused at {point}" in server.log_path.read_text(errors="replace")


def _kill_at(server: Server, point: str, request: Callable[[], object]) -> None:
    """Run ``request`` in a thread, kill -9 the server when it reaches ``point``, restart it."""
    thread = threading.Thread(target=request, daemon=True)
    thread.start()
    _wait_for(lambda: _paused(server, point), server)
    server.kill()
    thread.join(DEADLINE_SECONDS)
    del server.env[PAUSE_ENV]
    server.start()


def _blob_stored_events(http: httpx.Client, sha256: str) -> int:
    count, after = 0, 0
    while True:
        page = http.get("/v1/events", params={"after": after, "limit": 1000}).json()
        if not page["items"]:
            return count
        count += sum(
            1
            for e in page["items"]
            if e["type"] == "v1.blob.stored" and e["payload"]["sha256"] == f"sha256:{sha256}"
        )
        after = page["next_after"]


def _staged(server: Server) -> list[str]:
    return sorted(p.name for p in (server.data_dir / "staging").iterdir())


@pytest.mark.parametrize("point", POINTS)
def test_a_finalize_killed_at_any_point_completes_on_a_retried_put(
    start_server: Callable[..., Server], backend: Backend, point: str
) -> None:
    """Killed inside a finalize, the restarted server completes a retried PUT: one copy, one event.

    HEAD answers the full offset first; afterwards the backend holds no
    unrecorded object and staging is empty.
    """
    server = start_server(config=backend.config, extra_env={**backend.env, PAUSE_ENV: point})
    data = os.urandom(SIZE)
    sha256 = hashlib.sha256(data).hexdigest()
    headers = {"Authorization": f"Bearer {server.env['ARTIFACTSTORE_TOKEN']}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=DEADLINE_SECONDS) as http:
        location = http.post("/v1/uploads", json={"size": SIZE}).headers["location"]
        patched = http.patch(location, content=data, headers={"Upload-Offset": "0"})
        assert patched.status_code == 204

        def finalize() -> None:
            with (
                httpx.Client(base_url=server.url, headers=headers, timeout=600) as first,
                contextlib.suppress(httpx.HTTPError),  # the server dies under it
            ):
                first.put(location, params={"sha256": sha256})

        _kill_at(server, point, finalize)

        head = http.head(location)
        assert head.status_code == 200, head
        assert head.headers["upload-offset"] == str(SIZE)
        retried = http.put(location, params={"sha256": sha256})
        assert retried.status_code == 201, retried.text
        assert retried.json()["sha256"] == f"sha256:{sha256}"
        assert http.get(f"/v1/blobs/sha256:{sha256}").content == data
        assert _blob_stored_events(http, sha256) == 1
        assert backend.objects(server) == [sha256]
        assert http.head(location).status_code == 404
    _wait_for(lambda: _staged(server) == [], server)


def test_a_handed_store_killed_mid_way_leaves_no_staged_file(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """Kill -9 during a handed-over store: the restarted server removes the staged bytes at once."""
    server = start_server(extra_env={PAUSE_ENV: "handoff:staged"})
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(SIZE))
    upload = subprocess.Popen(
        [sys.executable, "-m", "artifactstore.cli", "upload", "crash", "1.0", str(src)],
        env=server.client_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: _paused(server, "handoff:staged"), server)
        assert [p for p in _staged(server) if p.startswith("ingest-")]
        server.kill()
    finally:
        upload.kill()
        upload.wait()
    del server.env[PAUSE_ENV]
    server.start()
    assert _staged(server) == []


@pytest.mark.parametrize("point", POINTS)
def test_a_finalize_killed_on_one_replica_completes_on_another(
    start_server: Callable[..., Server], s3_backend: Backend, point: str
) -> None:
    """Replica A dies inside a finalize and stays dead: replica B finishes the retried PUT.

    The session is database-staged (external database, only an S3 target,
    docs/design/0007): A's data dir holds nothing B needs.
    """
    env = s3_backend.env
    dying = start_server(config=s3_backend.config, extra_env={**env, PAUSE_ENV: point})
    other = start_server(config=s3_backend.config, extra_env=env)
    data = os.urandom(SIZE)
    sha256 = hashlib.sha256(data).hexdigest()
    headers = {"Authorization": f"Bearer {dying.env['ARTIFACTSTORE_TOKEN']}"}
    with httpx.Client(base_url=dying.url, headers=headers, timeout=DEADLINE_SECONDS) as http:
        location = http.post("/v1/uploads", json={"size": SIZE}).headers["location"]
        assert http.patch(location, content=data, headers={"Upload-Offset": "0"}).status_code == 204

    def finalize() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server dies under it
            httpx.put(dying.url + location, params={"sha256": sha256}, headers=headers, timeout=600)

    thread = threading.Thread(target=finalize, daemon=True)
    thread.start()
    _wait_for(lambda: _paused(dying, point), dying)
    dying.kill()
    thread.join(DEADLINE_SECONDS)
    with httpx.Client(base_url=other.url, headers=headers, timeout=DEADLINE_SECONDS) as http:
        head = http.head(location)
        assert head.status_code == 200, head
        assert head.headers["upload-offset"] == str(SIZE)
        retried = http.put(location, params={"sha256": sha256})
        assert retried.status_code == 201, retried.text
        assert http.get(f"/v1/blobs/sha256:{sha256}").content == data
        assert _blob_stored_events(http, sha256) == 1
        assert s3_backend.objects(other) == [sha256]
    assert _staged(dying) == _staged(other) == []
