"""The real ``artifactstore serve`` as a subprocess, and the real CLI, for end-to-end tests.

``start_server`` launches ``python -m artifactstore.cli serve`` with its own
data dir, on this test's database (``ARTIFACTSTORE_DATABASE_URL``) unless
asked to use the embedded cluster, waits for ``/healthz``, and stops it at
teardown (SIGTERM, then SIGKILL). It does not drain on SIGTERM
(``ARTIFACTSTORE_SERVER_DRAIN_SECONDS=0``) unless ``env`` says otherwise. A
write token is created with the real CLI (``token create --json``) and
handed to clients through ``ARTIFACTSTORE_TOKEN``.
Server output goes to ``<data_dir>/server.log`` for assertions and post-mortems.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

import boto3
import httpx
from botocore import UNSIGNED
from botocore.config import Config

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

STARTUP_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cli(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI (``python -m artifactstore.cli``) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "artifactstore.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class LoopbackPorts:
    """What clients reach on 127.0.0.1: a REST port and an S3 port (a server, a balancer)."""

    port: int
    s3_port: int

    @property
    def url(self) -> str:
        """The REST API's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def s3_url(self) -> str:
        """The S3 gateway's endpoint URL."""
        return f"http://127.0.0.1:{self.s3_port}"


@dataclass
class Server(LoopbackPorts):
    """A running ``artifactstore serve`` subprocess and what clients need to reach it."""

    data_dir: Path
    port: int
    s3_port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """Where the server's stdout and stderr go."""
        return self.data_dir / "server.log"

    def client_env(self) -> dict[str, str]:
        """Environment for CLI clients of this server."""
        return {**self.env, "ARTIFACTSTORE_SERVER": self.url}

    def start(self) -> None:
        """Start the process and wait until ``/healthz`` answers."""
        self.spawn()
        self.wait_healthy()

    def spawn(self) -> None:
        """Start the process; do not wait (start several, then ``wait_healthy`` each)."""
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.process = self._spawn(log)

    def wait_healthy(self) -> None:
        """Wait until ``/healthz`` answers; kill the process if it never does."""
        assert self.process is not None, "spawn() first"
        if answers_healthz(self.process, self.url, self.log_tail):
            return
        self.kill()
        msg = f"server did not become healthy:\n{self.log_tail()}"
        raise RuntimeError(msg)

    def _spawn(self, log: BinaryIO) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "artifactstore.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--s3-port",
                str(self.s3_port),
                "--data-dir",
                str(self.data_dir),
            ],
            env={"ARTIFACTSTORE_SERVER_DRAIN_SECONDS": "0", **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> int | None:
        """SIGTERM and wait (graceful shutdown); SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """SIGKILL: a crash at whatever moment the test chose."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        """Kill the process if it still runs."""
        self.kill()

    def wait_until(
        self, what: str, condition: Callable[[], bool], seconds: float = STARTUP_TIMEOUT_SECONDS
    ) -> None:
        """Poll ``condition`` until it holds; fail naming ``what`` after ``seconds``."""
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, f"{what}:\n{self.log_tail()}"
            time.sleep(0.05)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the server wrote."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def answers_healthz(
    process: subprocess.Popen[bytes], url: str, log_tail: Callable[[], str]
) -> bool:
    """Poll ``url/healthz`` until it answers 200 (True) or the start-up deadline passes (False).

    Raises:
        RuntimeError: the process exited first (with ``log_tail()``).
    """
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            msg = f"{process.args!r} exited with {process.returncode}:\n{log_tail()}"
            raise RuntimeError(msg)
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return True
        time.sleep(0.1)
    return False


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes (to compare trees)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def base_env(tmp_path: Path) -> dict[str, str]:
    """This environment without ARTIFACTSTORE_*/AWS_*, with a private cache and home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTIFACTSTORE_", "AWS_"))}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["HOME"] = str(tmp_path / "home")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def anonymous_s3(server: Server) -> S3Client:
    """boto3 on the server's S3 gateway, unsigned (anonymous reads: it listens on loopback)."""
    return boto3.client(
        "s3",
        endpoint_url=server.s3_url,
        region_name="us-east-1",
        config=Config(
            signature_version=UNSIGNED,
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
        ),
    )
