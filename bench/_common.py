"""Shared helpers for the benchmarks: generated streams, rates, memory, server processes.

What more than one script needs lives here, once; what one script alone uses
stays in that script.
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

MIB = 1024 * 1024
GIB = 1024 * MIB


def generated_chunks(total: int, chunk: int = MIB, seed: int = 1) -> Iterator[bytes]:
    """``total`` bytes in ``chunk``-sized pieces, generated (never held whole).

    One random block is reused with a per-chunk counter stamped in, so no two
    chunks are equal and generation costs almost nothing next to hashing.
    """
    block = bytearray(os.urandom(chunk))
    block[:8] = seed.to_bytes(8, "big")
    sent = 0
    n = 0
    while sent < total:
        size = min(chunk, total - sent)
        block[8:16] = n.to_bytes(8, "big")
        yield bytes(block[:size])
        sent += size
        n += 1


async def agenerated_chunks(total: int, chunk: int = MIB, seed: int = 1) -> AsyncIterator[bytes]:
    """The async form of ``generated_chunks``."""
    for piece in generated_chunks(total, chunk, seed):
        yield piece


def sha256_rate(total: int) -> float:
    """This machine's single-thread sha256 speed in bytes/s over generated data."""
    h = hashlib.sha256()
    start = time.perf_counter()
    for piece in generated_chunks(total):
        h.update(piece)
    return total / (time.perf_counter() - start)


def rss_bytes() -> int:
    """Current resident set size of this process."""
    pages = int(Path("/proc/self/statm").read_text(encoding="ascii").split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mb(rate: float) -> str:
    """Bytes/s as MB/s (10^6), the unit of docs/PERFORMANCE.md."""
    return f"{rate / 1e6:,.0f} MB/s"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 a moment ago (every script's servers listen on one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(
    url: str,
    process: subprocess.Popen[bytes] | None = None,
    *,
    timeout: float = 180,
    any_status: bool = False,
) -> None:
    """Poll ``url`` until it answers 200 (with ``any_status``, anything below 500).

    Shared by every script that starts a server; gives up early if
    ``process`` exits first.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before {url} answered")
        try:
            status = httpx.get(url, timeout=2).status_code
        except httpx.HTTPError:
            pass
        else:
            if status == 200 or (any_status and status < 500):
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def server_env() -> dict[str, str]:
    """This environment without ``ARTIFACTSTORE_*``, so the caller's settings stay out of a run."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTSTORE_")}


def start_server(
    data_dir: Path,
    env: dict[str, str],
    *,
    config: Path | None = None,
    log: IO[bytes] | int = subprocess.DEVNULL,
) -> tuple[subprocess.Popen[bytes], str, str]:
    """Spawn ``artifactstore serve`` on free loopback ports, as the transfer and gateway runs do.

    Returns the process, the REST API's URL and the S3 gateway's URL without
    waiting for either (``wait_http``), so callers can watch the start-up.
    Output (stdout and stderr) goes to ``log``.
    """
    api_port, s3_port = free_port(), free_port()
    command = [
        sys.executable,
        "-m",
        "artifactstore.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(api_port),
        "--s3-port",
        str(s3_port),
        "--data-dir",
        str(data_dir),
    ]
    if config is not None:
        command += ["--config", str(config)]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{s3_port}"


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s: how each script ends the servers it started."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
