"""Three real replicas behind a real nginx, no session affinity (DESIGN section 13, issue 13).

Each test drives the balancer as a user would (the CLI, the REST protocol by
hand, boto3, an SSE reader) against the ``replicas`` fixture: three
``artifactstore serve`` processes on one PostgreSQL and one moto bucket (the
only backend), behind nginx configured with ``deploy/nginx/artifactstore.conf``.
Every test ends with ``events verify`` clean on the shared database.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import blake3
import boto3
import httpx
import pytest
from botocore.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from tests.e2e.balancer import receiving
from tests.e2e.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET
from tests.e2e.serverproc import cli, tree_bytes

if TYPE_CHECKING:
    from pathlib import Path

    from tests.e2e.conftest import Replicas
    from tests.e2e.serverproc import Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MIB = 1024 * 1024
DEADLINE_SECONDS = 120.0


def _events_verify(replicas: Replicas) -> None:
    """``artifactstore events verify`` on the shared database: the chain is whole."""
    run = cli("events", "verify", "--json", env=replicas.servers[0].env)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["ok"] is True


def _auth(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.env['ARTIFACTSTORE_TOKEN']}"}


def _upstreams(replicas: Replicas, method: str, listen: int) -> set[str]:
    """The replicas (host:port) nginx sent ``method`` requests of one listener to."""
    return {
        r["upstream"]
        for r in replicas.balancer.requests()
        if r["method"] == method and int(r["listen"]) == listen and r["upstream"]
    }


@pytest.mark.parametrize("transport", ["http", "handoff"])
def test_cli_upload_and_download_through_the_balancer(
    replicas: Replicas, tmp_path: Path, transport: str
) -> None:
    """The CLI publishes a tree (one file of ~20 MiB in several PATCHes) and reads it back exactly.

    Over HTTP the PATCHes of one session are spread over the replicas by
    round-robin; handed over, the big file goes to one replica's socket.
    """
    src = tmp_path / "release"
    (src / "docs").mkdir(parents=True)
    (src / "small.txt").write_text("small\n")
    (src / "docs" / "mid.bin").write_bytes(os.urandom(300_000))
    (src / "big.bin").write_bytes(os.urandom(20 * MIB + 17))
    flags = ["--no-handoff", "--chunk-size", "4MiB"] if transport == "http" else []
    env = replicas.client_env()
    up = cli("upload", "demo", "1.0", str(src), "--concurrency", "1", *flags, env=env)
    assert up.returncode == 0, up.stderr
    if transport == "http":
        patched = [r for r in replicas.balancer.requests() if r["method"] == "PATCH"]
        assert len(patched) >= 5  # 20 MiB in 4 MiB bodies
        assert len(_upstreams(replicas, "PATCH", replicas.balancer.port)) == 3
    out = tmp_path / "out"
    down = cli("download", "demo", "1.0", "--output", str(out), env=env)
    assert down.returncode == 0, down.stderr
    assert tree_bytes(out / "release") == tree_bytes(src)
    _events_verify(replicas)


def test_one_session_hops_replicas_by_hand(replicas: Replicas) -> None:
    """POST on 1, PATCH on 2, HEAD on 3, PATCH on 1, PUT on 2, GET on 3: same bytes and digests."""
    one, two, three = replicas.servers
    data = os.urandom(9 * MIB + 321)
    first, second = data[: 5 * MIB], data[5 * MIB :]
    sha256, b3 = hashlib.sha256(data).hexdigest(), blake3.blake3(data).hexdigest()
    timeout = httpx.Timeout(60.0)
    with httpx.Client(headers=_auth(one), timeout=timeout) as http:
        made = http.post(f"{one.url}/v1/uploads", json={"size": len(data)})
        assert made.status_code == 201, made.text
        location = made.headers["location"]
        patched = http.patch(f"{two.url}{location}", content=first, headers={"Upload-Offset": "0"})
        assert patched.status_code == 204, patched.text
        assert patched.headers["upload-offset"] == str(len(first))
        head = http.head(f"{three.url}{location}")
        assert head.status_code == 200
        assert head.headers["upload-offset"] == str(len(first))
        patched = http.patch(
            f"{one.url}{location}", content=second, headers={"Upload-Offset": str(len(first))}
        )
        assert patched.status_code == 204, patched.text
        assert patched.headers["upload-offset"] == str(len(data))
        done = http.put(f"{two.url}{location}", params={"sha256": sha256, "blake3": b3})
        assert done.status_code == 201, done.text
        blob = done.json()
        assert (blob["sha256"], blob["blake3"]) == (f"sha256:{sha256}", f"blake3:{b3}")
        got = http.get(f"{three.url}/v1/blobs/sha256:{sha256}")
        assert got.status_code == 200
        assert got.content == data
        assert http.head(f"{one.url}{location}").status_code == 404  # the session is finished
    _events_verify(replicas)


def test_s3_paginator_over_2500_keys_through_the_balancer(
    replicas: Replicas, tmp_path: Path
) -> None:
    """boto3's SigV4 ``list_objects_v2`` paginator, 100 keys a page: every key exactly once.

    Round-robin sends the pages to every replica, so each continuation token
    is honoured by a replica that did not issue it.
    """
    files = 2500
    src = tmp_path / "many"
    src.mkdir()
    for i in range(files):
        (src / f"f{i:04d}.txt").write_text(f"file {i % 50}\n")  # 50 blobs, 2,500 keys
    up = cli("upload", "many", "1.0", str(src), env=replicas.client_env(), timeout=600)
    assert up.returncode == 0, up.stderr
    s3 = boto3.client(
        "s3",
        endpoint_url=replicas.balancer.s3_url,
        region_name="us-east-1",
        aws_access_key_id=GATEWAY_ACCESS_KEY,
        aws_secret_access_key=GATEWAY_SECRET,
        config=Config(
            signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}
        ),
    )
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket="many", PaginationConfig={"PageSize": 100}
    )
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    assert len(keys) == files
    assert sorted(keys) == sorted(f"1.0/many/f{i:04d}.txt" for i in range(files))
    listed = _upstreams(replicas, "GET", replicas.balancer.s3_port)
    assert listed == {f"127.0.0.1:{s.s3_port}" for s in replicas.servers}
    _events_verify(replicas)


def _read_events(
    url: str, opened: threading.Event, found: queue.Queue[dict[str, Any]], wanted: str
) -> None:
    """Read an SSE stream until an event whose data names ``wanted``; put it in ``found``."""
    timeout = httpx.Timeout(10.0, read=DEADLINE_SECONDS)
    with httpx.stream("GET", url, timeout=timeout) as stream:
        assert stream.status_code == 200
        opened.set()
        kind = ""
        for line in stream.iter_lines():
            if line.startswith("event:"):
                kind = line.partition(":")[2].strip()
            elif line.startswith("data:") and wanted in line:
                found.put({"type": kind, **json.loads(line.partition(":")[2])})
                return


def test_sse_on_one_replica_sees_a_publish_through_another(
    replicas: Replicas, tmp_path: Path
) -> None:
    """Streams open on replica 1 and through the balancer both carry a publish via replica 3."""
    one, _two, three = replicas.servers
    head = httpx.get(f"{one.url}/v1/events", params={"after": 0, "limit": 1000}, timeout=30)
    after = max([0, *(e["seq"] for e in head.json()["items"])])
    found: queue.Queue[dict[str, Any]] = queue.Queue()
    bases = (one.url, replicas.balancer.url)
    streams = [f"{base}/v1/events/stream?after={after}" for base in bases]
    opened = [threading.Event() for _ in streams]
    for url, ready in zip(streams, opened, strict=True):
        reader = threading.Thread(target=_read_events, args=(url, ready, found, "ssepkg"))
        reader.daemon = True
        reader.start()
    for ready in opened:
        assert ready.wait(DEADLINE_SECONDS), "an event stream did not open"
    (tmp_path / "a.txt").write_text("a\n")
    up = cli("upload", "ssepkg", "1.0", str(tmp_path / "a.txt"), env=three.client_env())
    assert up.returncode == 0, up.stderr
    seen = [found.get(timeout=DEADLINE_SECONDS) for _ in streams]
    assert [e["type"] for e in seen] == ["v1.package.published"] * 2
    _events_verify(replicas)


def _rows(database_url: str, table: str) -> int | None:
    """Rows in ``table`` of the shared database; None when there is no such table."""

    async def count() -> int | None:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as conn:
                exists = await conn.scalar(text("SELECT to_regclass(:t)"), {"t": table})
                if exists is None:
                    return None
                query = text(f"SELECT count(*) FROM {table}")  # noqa: S608 - our own names
                return int(await conn.scalar(query) or 0)
        finally:
            await engine.dispose()

    return asyncio.run(count())


def _staged_files(servers: list[Server]) -> list[str]:
    """Files in the replicas' ``staging/`` directories, lock files aside."""
    return [
        str(p)
        for s in servers
        if (s.data_dir / "staging").exists()
        for p in (s.data_dir / "staging").rglob("*")
        if p.is_file() and not p.name.endswith(".lock")
    ]


def test_killed_replica_mid_upload_resumes_through_the_balancer(
    replicas: Replicas, tmp_path: Path, database_url: str
) -> None:
    """Kill -9 of the replica receiving a PATCH: the running upload resumes on the others.

    After the kill the balancer carries fewer PATCH bytes than the file (it
    resumed from the acknowledged offset, not from byte 0); the blob
    downloads exactly, the chain verifies and no staged bytes are left.
    """
    big = tmp_path / "big.bin"
    with big.open("wb") as fh:
        for _ in range(30):
            fh.write(os.urandom(5 * MIB))
    size = big.stat().st_size
    command = ["upload", "big", "1.0", str(big), "--no-handoff", "--chunk-size", "8MiB",
               "--concurrency", "1", "--json"]  # fmt: skip
    upload = subprocess.Popen(
        [sys.executable, "-m", "artifactstore.cli", *command],
        env=replicas.client_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    balancer = replicas.balancer
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        victims: list[Server] = []
        while not victims:
            acked = [r for r in balancer.requests() if (r["method"], r["status"]) == ("PATCH", 204)]
            if len(acked) >= 2:  # a resume point above one PATCH body
                victims = receiving(replicas.servers)
            assert upload.poll() is None, f"the upload ended first: {upload.communicate()[1]!r}"
            assert time.monotonic() < deadline, balancer.error_tail()
            time.sleep(0.01)
        logged_before_kill = len(balancer.requests())
        victims[0].kill()
        out, err = upload.communicate(timeout=600)
    finally:
        if upload.poll() is None:
            upload.kill()
            upload.wait()
    assert upload.returncode == 0, err.decode()
    assert json.loads(out)["uploaded"] == 1
    after_kill = balancer.requests()[logged_before_kill:]
    resent = sum(r["request_length"] for r in after_kill if r["method"] == "PATCH")
    assert 0 < resent < size  # resumed at the acknowledged offset, not from byte 0
    out_dir = tmp_path / "out"
    down = cli("download", "big", "1.0", "--output", str(out_dir), env=replicas.client_env())
    assert down.returncode == 0, down.stderr
    assert (out_dir / "big.bin").read_bytes() == big.read_bytes()
    _events_verify(replicas)
    assert _rows(database_url, "upload_parts") == 0
    assert _rows(database_url, "upload_sessions") == 0
    assert _staged_files(replicas.servers) == []
