"""HAProxy, the other balancer OPERATOR.md documents, over the same three replicas.

Runs ``deploy/haproxy/artifactstore.cfg`` unchanged (its addresses come from
the environment) in front of the ``replicas`` fixture's servers: a session
driven by hand through it, then a replica killed and a CLI upload and
download through HAProxy that must not notice.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from tests.e2e.serverproc import cli, free_port, tree_bytes

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.e2e.conftest import Replicas

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "artifactstore.cfg"
MIB = 1024 * 1024
DEADLINE_SECONDS = 60.0


@pytest.fixture
def haproxy(replicas: Replicas, tmp_path: Path) -> Iterator[str]:
    """HAProxy on the operator's configuration over the three replicas; its REST URL."""
    binary = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if binary is None:
        pytest.skip("haproxy is not on PATH (Debian: apt-get install -y haproxy)")
    port = free_port()
    env = {**os.environ, "LISTEN_API": f"127.0.0.1:{port}", "LISTEN_S3": f"127.0.0.1:{free_port()}"}
    for i, server in enumerate(replicas.servers, start=1):
        env[f"REPLICA{i}_API"] = f"127.0.0.1:{server.port}"
        env[f"REPLICA{i}_S3"] = f"127.0.0.1:{server.s3_port}"
    log = (tmp_path / "haproxy.log").open("wb")
    process = subprocess.Popen(
        [binary, "-db", "-f", str(CONFIG)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            assert process.poll() is None, (tmp_path / "haproxy.log").read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "haproxy.log").read_text()
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(15)
        log.close()


def test_a_session_by_hand_through_haproxy(replicas: Replicas, haproxy: str) -> None:
    """POST, three PATCHes and the PUT, round-robin over the replicas: the blob reads back exact."""
    headers = {"Authorization": f"Bearer {replicas.servers[0].env['ARTIFACTSTORE_TOKEN']}"}
    pieces = [os.urandom(MIB + i) for i in range(3)]
    data = b"".join(pieces)
    with httpx.Client(base_url=haproxy, headers=headers, timeout=DEADLINE_SECONDS) as http:
        location = http.post("/v1/uploads", json={"size": len(data)}).headers["location"]
        at = 0
        for piece in pieces:
            patched = http.patch(location, content=piece, headers={"Upload-Offset": str(at)})
            assert patched.status_code == 204, patched.text
            at += len(piece)
        sha256 = hashlib.sha256(data).hexdigest()
        done = http.put(location, params={"sha256": sha256})
        assert done.status_code == 201, done.text
        assert http.get(f"/v1/blobs/sha256:{sha256}").content == data


def test_a_dead_replica_goes_unnoticed_through_haproxy(
    replicas: Replicas, haproxy: str, tmp_path: Path
) -> None:
    """Kill -9 of one replica: the CLI's upload and download through HAProxy both succeed."""
    replicas.servers[1].kill()
    src = tmp_path / "release"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(12 * MIB + 3))
    (src / "small.txt").write_text("small\n")
    env = {**replicas.servers[0].env, "ARTIFACTSTORE_SERVER": haproxy}
    up = cli(
        "upload", "via-haproxy", "1.0", str(src), "--no-handoff", "--chunk-size", "4MiB", env=env
    )
    assert up.returncode == 0, up.stderr
    out = tmp_path / "out"
    down = cli("download", "via-haproxy", "1.0", "--output", str(out), env=env)
    assert down.returncode == 0, down.stderr
    assert tree_bytes(out / "release") == tree_bytes(src)
