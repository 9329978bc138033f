"""``storage verify`` as an operator runs it, beside a live server, with real corruption."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx
import pytest
from tests.e2e.serverproc import Server, cli

from artifactstore.digests import hash_bytes

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.e2e


def test_verify_finds_flipped_missing_and_stray_objects(server: Server, tmp_path: Path) -> None:
    """One flipped byte fails verify (exit 1) and degrades /readyz until it is restored."""
    env = server.client_env()
    src = tmp_path / "pkg"
    src.mkdir()
    data = b"precious bytes " * 10_000
    (src / "a.bin").write_bytes(data)
    (src / "b.bin").write_bytes(b"second file")
    assert cli("upload", "demo", "1.0", str(src), env=env).returncode == 0
    sha = hash_bytes(data).sha256.hex
    blob = server.data_dir / "blobs" / "sha256" / sha[:2] / sha[2:4] / sha
    original = blob.read_bytes()
    assert cli("storage", "verify", env=env).returncode == 0

    blob.write_bytes(original[:100] + bytes([original[100] ^ 1]) + original[101:])
    run = cli("storage", "verify", "--json", env=env)
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    failed = [(f["sha256"], f["backend"]) for f in report["failed"]]
    assert failed == [(sha, "local")]
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["status"] == "degraded"
    events = httpx.get(f"{server.url}/v1/events", params={"limit": 1000}).json()["items"]
    assert "v1.storage.location_failed" in [e["type"] for e in events]

    blob.write_bytes(original)
    assert cli("storage", "verify", env=env).returncode == 0
    assert httpx.get(f"{server.url}/readyz").json()["status"] == "ok"

    stray = hash_bytes(b"nobody knows me").sha256.hex
    stray_path = server.data_dir / "blobs" / "sha256" / stray[:2] / stray[2:4] / stray
    stray_path.parent.mkdir(parents=True, exist_ok=True)
    stray_path.write_bytes(b"nobody knows me")
    blob.unlink()
    run = cli("storage", "verify", "--json", env=env)
    assert run.returncode == 1
    report = json.loads(run.stdout)
    assert [m["sha256"] for m in report["missing"]] == [sha]
    assert [o["sha256"] for o in report["orphans"]] == [stray]
    assert stray_path.exists()
    status = cli("storage", "status", env=env)
    assert status.returncode == 1
