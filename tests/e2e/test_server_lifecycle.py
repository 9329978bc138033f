"""The real server as a new user runs it: zero configuration, crashes, restarts."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import httpx
import pytest
from tests.e2e.serverproc import Server, cli

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.e2e


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_zero_configuration_round_trip(start_server: Callable[..., Server], tmp_path: Path) -> None:
    """On the embedded default, upload then download reproduce a tree with no token handling.

    The data dir's blobs and staging directories are private (0700) to the server's user.
    """
    server = start_server(embedded=True)
    token_file = server.data_dir / "admin-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    src = tmp_path / "somedir"
    (src / "nested" / "deeper").mkdir(parents=True)
    (src / "a.txt").write_text("hello\n")
    (src / "nested" / "empty").write_bytes(b"")
    (src / "nested" / "deeper" / "ünï cødé.bin").write_bytes(os.urandom(300_000))
    (src / "nested" / "copy.txt").write_text("hello\n")
    env = server.client_env()
    up = cli("upload", "demo", "1.0.0", str(src), env=env)
    assert up.returncode == 0, up.stderr
    out = tmp_path / "out"
    down = cli("download", "demo", "1.0.0", "--output", str(out), env=env)
    assert down.returncode == 0, down.stderr
    assert _tree(out / "somedir") == _tree(src)
    private = [server.data_dir / "blobs", server.data_dir / "staging"]
    private += [p for p in (server.data_dir / "blobs").rglob("*") if p.is_dir()]
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in private} == {
        p.name: "0o700" for p in private
    }
    again = cli("upload", "demo", "1.0.0", str(src), env=env)
    assert again.returncode == 0, again.stderr
    assert server.stop() == 0


# How the CLI sends bytes to a server on its machine: the whole file handed over
# the server's socket (the default; the server hashes it), or PATCH bodies over
# HTTP (as from elsewhere).
TRANSPORTS = {"handoff": [], "http": ["--no-handoff"]}
_PATCHED = re.compile(r'"method":"PATCH".*"status":204')


def _mid_transfer(server: Server, transport: str) -> bool:
    """A PATCH was acknowledged (http), or the server is writing a handed file (handoff)."""
    if transport == "http":
        return bool(_PATCHED.search(server.log_path.read_text(errors="replace")))
    staging = server.data_dir / "staging"
    return any(p.stat().st_size for p in staging.iterdir()) if staging.exists() else False


@pytest.mark.slow
@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_upload_resumes_after_the_server_is_killed(
    start_server: Callable[..., Server], tmp_path: Path, transport: str
) -> None:
    """Kill -9 mid-upload, restart: the same upload command finishes.

    Over HTTP it resumes from the staged offset. A handed-over file is stored
    again from its start: the bytes cross no network, so the server re-reads
    the client's file (docs/design/0005).
    """
    flags = TRANSPORTS[transport]
    server = start_server()
    big = tmp_path / "big.bin"
    with big.open("wb") as fh:
        for _ in range(48):
            fh.write(os.urandom(4 * 1024 * 1024))
    upload = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "artifactstore.cli",
            "upload",
            "big",
            "1.0",
            str(big),
            "--chunk-size",
            "2MiB",
            "--concurrency",
            "1",
            *flags,
        ],
        env=server.client_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not _mid_transfer(server, transport):
            assert upload.poll() is None, "upload finished before the crash could happen"
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.01)
        server.kill()
        time.sleep(1.0)
        server.start()
        out, err = upload.communicate(timeout=300)
    finally:
        if upload.poll() is None:
            upload.kill()
    assert upload.returncode == 0, err.decode()
    metrics = httpx.get(f"{server.url}/metrics").text
    resumed = re.search(
        r"^artifactstore_upload_last_resumed_offset_bytes (\S+)$", metrics, re.MULTILINE
    )
    assert resumed is not None
    if transport == "http":
        assert float(resumed.group(1)) > 0
    down = cli("download", "big", "1.0", "--output", str(tmp_path / "out"), env=server.client_env())
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "out" / "big.bin").read_bytes() == big.read_bytes()
    del out


def test_wrong_digest_at_finalize_stores_nothing(server: Server) -> None:
    """A finalize with the wrong digest is refused by the real server and leaves no blob."""
    headers = {"Authorization": f"Bearer {server.env['ARTIFACTSTORE_TOKEN']}"}
    with httpx.Client(base_url=server.url, headers=headers) as http:
        location = http.post("/v1/uploads", json={}).headers["location"]
        http.patch(location, content=b"payload", headers={"Upload-Offset": "0"})
        r = http.put(location, params={"sha256": "0" * 64})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "digest_mismatch"
        actual = r.json()["error"]["detail"]["actual"]
        assert http.get(f"/v1/blobs/{actual}").status_code == 404
        assert http.get("/v1/storage").json()["backends"][0]["locations"]["stored"] == 0


def test_graceful_shutdown_exits_cleanly(server: Server) -> None:
    """SIGTERM stops the server with exit status 0."""
    assert httpx.get(f"{server.url}/readyz").json()["status"] == "ok"
    assert server.stop() == 0


def test_a_taken_port_is_one_clear_error(server: Server) -> None:
    """A second server on a port in use exits 2 with one line, before touching anything."""
    run = cli(
        "serve",
        "--port",
        str(server.port),
        "--s3-port",
        str(server.s3_port),
        "--data-dir",
        str(server.data_dir),
        env=server.client_env(),
        timeout=60,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("error: cannot listen on 127.0.0.1:")
    assert "Traceback" not in run.stderr
    assert httpx.get(f"{server.url}/healthz").status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_killed_upload_command_resumes_when_run_again(
    server: Server, tmp_path: Path, transport: str
) -> None:
    """Kill -9 the CLI mid-upload: running it again finishes the upload.

    Over HTTP it sends only the rest of the file. Handed over, the server
    still holds the killed CLI's descriptor and may finish that store itself;
    the re-run hands the file over again (no bytes cross a network) and the
    blob is stored once either way.
    """
    flags = TRANSPORTS[transport]
    big = tmp_path / "big.bin"
    with big.open("wb") as fh:
        for _ in range(48):
            fh.write(os.urandom(4 * 1024 * 1024))
    size = big.stat().st_size
    command = ["upload", "big", "2.0", str(big), "--chunk-size", "2MiB", "--json", *flags]
    upload = subprocess.Popen(
        [sys.executable, "-m", "artifactstore.cli", *command],
        env=server.client_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    try:
        while not _mid_transfer(server, transport):
            assert upload.poll() is None, "upload finished before the kill could happen"
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.01)
    finally:
        upload.kill()
        upload.wait()
    again = cli(*command, env=server.client_env())
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    if transport == "http":
        assert 0 < summary["bytes_uploaded"] < size  # the acknowledged prefix was not sent again
    out = tmp_path / "out"
    down = cli("download", "big", "2.0", "--output", str(out), env=server.client_env())
    assert down.returncode == 0, down.stderr
    assert (out / "big.bin").read_bytes() == big.read_bytes()
