"""Remembered upload sessions that are gone, and two CLI processes on one file (issue 12 item 8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import blake3
import pytest
from tests.e2e.serverproc import Server, cli

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.e2e


def test_a_remembered_session_that_is_gone_starts_a_new_one(server: Server, tmp_path: Path) -> None:
    """The cache names a session the server does not know (expired, finished elsewhere)."""
    data = os.urandom(3 * 1024 * 1024)
    src = tmp_path / "f.bin"
    src.write_bytes(data)
    env = server.client_env()
    cache = tmp_path / "cache" / "artifactstore" / "uploads"
    cache.mkdir(parents=True, exist_ok=True)
    entry = {"server": server.url, "session": "6f1c3b1e-0000-4000-8000-000000000000"}
    entry["size"] = len(data)  # type: ignore[assignment]
    (cache / f"{blake3.blake3(data).hexdigest()}.json").write_text(json.dumps(entry))
    up = cli("upload", "gone", "1", str(src), "--no-handoff", "--json", env=env)
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["uploaded"] == 1
    assert not list(cache.glob("*.json"))  # forgotten once the blob is stored


@pytest.mark.slow
@pytest.mark.parametrize("flags", [["--no-handoff"], []], ids=["http", "handoff"])
def test_two_cli_processes_uploading_one_file_both_succeed(
    server: Server, tmp_path: Path, flags: list[str]
) -> None:
    """Sharing ~/.cache/artifactstore/uploads, they race for one session; both publish."""
    src = tmp_path / "shared.bin"
    with src.open("wb") as fh:
        for _ in range(12):
            fh.write(os.urandom(4 * 1024 * 1024))
    env = server.client_env()
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "artifactstore.cli", "upload", f"twin{i}", "1", str(src),
             "--chunk-size", "1MiB", "--concurrency", "1", *flags],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]  # fmt: skip
    outcomes = [run.communicate(timeout=300) for run in runs]
    for run, (_out, err) in zip(runs, outcomes, strict=True):
        assert run.returncode == 0, err.decode()
    for i in range(2):
        down = cli("download", f"twin{i}", "1", "--output", str(tmp_path / f"o{i}"), env=env)
        assert down.returncode == 0, down.stderr
        assert (tmp_path / f"o{i}" / "shared.bin").read_bytes() == src.read_bytes()
