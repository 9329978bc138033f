"""Shared helpers for the benchmarks: generated streams, rates, memory, server processes.

What more than one script needs lives here, once; what one script alone uses
stays in that script.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import blake3
import httpx

if TYPE_CHECKING:
    import argparse
    from collections.abc import AsyncIterator, Callable, Iterator

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


def start_nginx(work: Path, http: str, probe: str) -> subprocess.Popen[bytes]:
    """Debian's nginx in the foreground with its files under ``work``; ``http`` is its http block.

    Waits until ``probe`` (a URL it serves) answers. One worker process.
    """
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    temp = ""
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / sub).mkdir(parents=True, exist_ok=True)
        temp += f"  {sub}_temp_path {work}/{sub};\n"
    conf = work / "nginx.conf"
    conf.write_text(
        f"daemon off;\n{'user root;' if os.geteuid() == 0 else ''}\nworker_processes 1;\n"
        f"pid {work}/nginx.pid;\nerror_log {work}/error.log;\n"
        "events { worker_connections 4096; }\n"
        f"http {{\n  access_log off;\n{temp}{http}\n}}\n",
        encoding="ascii",
    )
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(work)])
    wait_http(probe, proc, timeout=30, any_status=True)
    return proc


def add_s3_options(parser: argparse.ArgumentParser, bucket: str) -> None:
    """``--s3-endpoint`` (default ``$S3_ENDPOINT_URL``), the variables naming its keys, a bucket."""
    parser.add_argument("--s3-endpoint", help="an S3 endpoint, e.g. Ceph RGW ($S3_ENDPOINT_URL)")
    parser.add_argument("--s3-key-env", default="S3_ACCESS_KEY_ID", help="access key variable")
    parser.add_argument(
        "--s3-secret-env", default="S3_SECRET_ACCESS_KEY", help="secret key variable"
    )
    parser.add_argument("--s3-bucket", default=bucket, help="created if missing")


def in_work_dir(prefix: str, body: Callable[[Path, ExitStack], None]) -> None:
    """Run ``body`` in a fresh directory under /tmp with an ExitStack for its cleanup; remove it."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        with ExitStack() as stack:
            body(work, stack)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def gateway_config(work: Path, access_key: str, secret_key: str, *, anonymous: bool) -> Path:
    """A server config file with one S3 gateway credential (its secret in a file) under ``work``.

    ``anonymous`` also lets unsigned requests read (the gateway is on loopback).
    """
    secret = work / "gw-secret"
    secret.write_text(secret_key, encoding="ascii")
    config = work / "artifactstore.toml"
    config.write_text(
        f"[gateway]\nanonymous_read = {'true' if anonymous else 'false'}\n"
        "[[gateway.credentials]]\n"
        f'access_key_id = "{access_key}"\nsecret_access_key_ref = "file:{secret}"\n',
        encoding="utf-8",
    )
    return config


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (all threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in KiB (empty once the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            found[key] = int(value.split()[0])
    return found


@dataclass
class RssSampler:
    """Samples a process's VmRSS every ``interval`` seconds in a thread, labelled by phase."""

    pid: int
    interval: float = 0.05
    phase: str = "start-up"
    samples: list[tuple[str, int]] = field(default_factory=list)
    hwm: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Start sampling in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        """Take one sample now (also called by the thread)."""
        status = proc_status_kib(self.pid)
        if "VmRSS" in status:
            self.samples.append((self.phase, status["VmRSS"] * 1024))
            self.hwm = max(self.hwm, status.get("VmHWM", 0) * 1024)

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def peak(self, phase: str | None = None) -> int:
        """The highest sampled RSS in bytes, over one phase or all of them."""
        return max((rss for p, rss in self.samples if phase is None or p == phase), default=0)

    def median(self, phase: str) -> int:
        """The median sampled RSS in bytes over one phase."""
        values = [rss for p, rss in self.samples if p == phase]
        return int(statistics.median(values)) if values else 0


def compile_installed() -> None:
    """Bytecode for site-packages and artifactstore, as a warm installation has."""
    import artifactstore  # noqa: PLC0415 - only to find the package

    roots = {sysconfig.get_path("purelib"), str(Path(artifactstore.__file__).parent)}
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", *sorted(roots)],
        check=False,
        stdout=subprocess.DEVNULL,
    )


@dataclass(frozen=True, slots=True)
class SmallFile:
    """One small file's bytes and digests (bare hex)."""

    data: bytes
    sha256: str
    blake3: str


def small_files(count: int, size: int = 4096) -> list[SmallFile]:
    """``count`` files of ``size`` distinct random bytes, digests computed."""
    files = []
    for _ in range(count):
        data = os.urandom(size)
        files.append(
            SmallFile(data, hashlib.sha256(data).hexdigest(), blake3.blake3(data).hexdigest())
        )
    return files


def one_file_manifest(package: str, version: str, f: SmallFile) -> dict[str, object]:
    """The JSON manifest of a version holding ``f`` alone, as ``f.bin``."""
    return {
        "package": package,
        "version": version,
        "files": [
            {
                "path": "f.bin",
                "size": len(f.data),
                "sha256": f"sha256:{f.sha256}",
                "blake3": f"blake3:{f.blake3}",
            }
        ],
    }


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank; NaN when empty)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load_average() -> str:
    """The three load averages, printed at both ends of the run."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def mib(n: int) -> str:
    """Bytes as whole MiB, the unit of the RSS rows."""
    return f"{n / MIB:.0f} MiB"


def write_random_file(path: Path, total: int) -> None:
    """``total`` bytes of os.urandom in 1 MiB blocks, fsynced."""
    with path.open("wb") as out:
        written = 0
        while written < total:
            block = os.urandom(min(MIB, total - written))
            out.write(block)
            written += len(block)
        out.flush()
        os.fsync(out.fileno())


def sha256_file(path: Path) -> tuple[str, float]:
    """The file's sha256 hex and the rate in bytes/s (hashlib, 1 MiB reads, one thread)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    started = time.perf_counter()
    with path.open("rb", buffering=0) as f:
        while block := f.read(MIB):
            h.update(block)
    return h.hexdigest(), size / (time.perf_counter() - started)


def cp_rates(source: Path) -> tuple[float, float]:
    """(cp without sync, cp + ``sync -f`` of the copy) in bytes/s; the copy is removed."""
    size = source.stat().st_size
    copy = source.with_name(source.name + ".cp")
    started = time.perf_counter()
    subprocess.run(["cp", str(source), str(copy)], check=True)
    copied = time.perf_counter() - started
    subprocess.run(["sync", "-f", str(copy)], check=True)
    synced = time.perf_counter() - started
    copy.unlink()
    return size / copied, size / synced
