"""A stalled S3 endpoint: the real server answers 503 instead of hanging, then recovers.

The endpoint is a moto server in its own process, so the test can SIGSTOP it:
the kernel still accepts connections and takes requests, nothing answers,
which is what a hung or partitioned S3 looks like. The server runs with short
S3 timeouts; its answers are timed and printed (``-s``) but not asserted on.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING

import httpx
import pytest
from tests.conformance.s3_support import S3Endpoint, s3_server_config
from tests.e2e.serverproc import Server, cli, free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GENEROUS_SECONDS = 60.0  # a client's patience; the answers come long before


@pytest.fixture
def own_moto(tmp_path: Path) -> Iterator[tuple[S3Endpoint, subprocess.Popen[bytes]]]:
    """A moto S3 server in a process of its own (the shared one runs inside pytest)."""
    port = free_port()
    with (tmp_path / "moto.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.1)
        yield S3Endpoint(f"http://127.0.0.1:{port}", "moto-key", "moto-secret"), proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait()


def _timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def _eventually_ok(call: Callable[[], httpx.Response]) -> httpx.Response:
    """The call's answer once it is a 200 (pooled connections may need a retry)."""
    deadline = time.monotonic() + GENEROUS_SECONDS
    while True:
        response = call()
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


def test_stalled_s3_endpoint_answers_503_then_recovers(
    own_moto: tuple[S3Endpoint, subprocess.Popen[bytes]],
    start_server: Callable[..., Server],
    tmp_path: Path,
) -> None:
    """With the S3 endpoint stopped, /readyz, a REST GET and a gateway GET answer 503 naming it."""
    endpoint, moto = own_moto
    bucket = f"stall-{uuid.uuid4().hex[:12]}"
    endpoint.raw_client().create_bucket(Bucket=bucket)
    toml, key_env = s3_server_config(
        endpoint, bucket, connect_timeout_seconds=1, read_timeout_seconds=2, max_attempts=2
    )
    config = tmp_path / "artifactstore.toml"
    config.write_text(toml)
    server = start_server(config=config, extra_env=key_env)
    src = tmp_path / "release"
    src.mkdir()
    (src / "a.txt").write_bytes(b"bytes that live in S3\n")
    up = cli("upload", "stall", "1.0", str(src), "--no-handoff", env=server.client_env())
    assert up.returncode == 0, up.stderr
    sha = hashlib.sha256(b"bytes that live in S3\n").hexdigest()

    with httpx.Client(timeout=GENEROUS_SECONDS) as http:

        def readyz() -> httpx.Response:
            return http.get(f"{server.url}/readyz")

        def rest_get() -> httpx.Response:
            return http.get(f"{server.url}/v1/blobs/sha256:{sha}")

        def gateway_get() -> httpx.Response:
            return http.get(f"{server.s3_url}/stall/1.0/release/a.txt")

        assert readyz().status_code == 200
        assert rest_get().content == gateway_get().content == (src / "a.txt").read_bytes()

        os.kill(moto.pid, signal.SIGSTOP)
        try:
            ready, ready_s = _timed(readyz)
            rest, rest_s = _timed(rest_get)
            gateway, gateway_s = _timed(gateway_get)
        finally:
            os.kill(moto.pid, signal.SIGCONT)
        figures = f"/readyz {ready_s:.1f} s, REST GET {rest_s:.1f} s, gateway {gateway_s:.1f} s"
        print(f"stalled S3: {figures}")  # noqa: T201 - reported, never asserted on

        assert ready.status_code == 503, ready.text
        assert ready.json()["backends"]["objects"]["healthy"] is False
        assert rest.status_code == 503, rest.text
        assert rest.json()["error"]["code"] == "backend_unavailable"
        assert gateway.status_code == 503, gateway.text
        assert "<Code>ServiceUnavailable</Code>" in gateway.text

        assert _eventually_ok(readyz).status_code == 200
        assert _eventually_ok(rest_get).content == (src / "a.txt").read_bytes()
        assert _eventually_ok(gateway_get).content == (src / "a.txt").read_bytes()
