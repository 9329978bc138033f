"""``storage verify`` throughput on each backend, beside ``sha256sum`` of the same bytes.

Generates ``--count`` blobs of ``--mib`` MiB each (default 16 x 128 MiB =
2 GiB; made on the fly, never held whole) and writes each one straight into
every backend with ``put_stream`` (timed: ingest MB/s per backend), records
the copies as ``v1.blob.stored``, reads every object back without hashing
(download MB/s), then times ``verify_storage`` per backend (GB/s, both
digests, default concurrency) and ``sha256sum`` over the local backend's
files in the same run. The files were just written, so both the verify of
``local`` and ``sha256sum`` read from the page cache: the comparison is
hashing against hashing.

Backends: ``local`` (a temp dir), ``postgres`` (1 MiB blocks in the embedded
cluster under the temp data dir) and, unless ``--no-s3``, ``s3`` on a
``moto_server`` subprocess. moto keeps every object in its own memory and is
a Python HTTP server, so the S3 backend gets ``--s3-mib`` in total (default
256 MiB) and its figures measure moto more than the adapter.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from _common import GIB, MIB, sha256_rate
from artifactstore.config import (
    DatabaseSettings,
    LocalBackendSettings,
    PostgresBackendSettings,
    S3BackendSettings,
    SecretRef,
    Settings,
    StorageSettings,
)
from artifactstore.digests import BlobDigests, DualHasher
from artifactstore.events import BlobStored
from artifactstore.registry import Registry
from artifactstore.registry.journal import record
from artifactstore.registry.verify import verify_storage
from artifactstore.storage.local import LocalBackend

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

BUCKET = "bench-verify"
S3_KEY_VAR = "BENCH_S3_ACCESS_KEY"
S3_SECRET_VAR = "BENCH_S3_SECRET_KEY"  # noqa: S105 - a variable name, not a secret


def chunks(size: int, seed: int) -> Iterator[bytes]:
    """``size`` deterministic bytes in 1 MiB pieces (same seed, same bytes)."""
    base = bytearray(hashlib.shake_256(f"bench-verify-{seed}".encode()).digest(MIB))
    sent = n = 0
    while sent < size:
        base[:16] = seed.to_bytes(8, "big") + n.to_bytes(8, "big")
        piece = bytes(base[: min(MIB, size - sent)])
        sent += len(piece)
        n += 1
        yield piece


async def achunks(size: int, seed: int) -> AsyncIterator[bytes]:
    """The async form of ``chunks``."""
    for piece in chunks(size, seed):
        yield piece


def digests_of(size: int, seed: int) -> BlobDigests:
    """Both digests of one generated blob."""
    hasher = DualHasher()
    for piece in chunks(size, seed):
        hasher.update(piece)
    return hasher.result()


@dataclass
class Row:
    """Figures of one backend."""

    name: str
    total: int
    ingest_s: float = 0.0
    download_s: float = 0.0
    verify_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """A moto_server subprocess on a free port, with the bucket created."""
    import boto3  # noqa: PLC0415 - only when S3 is benchmarked

    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",  # noqa: S106 - moto accepts anything
        region_name="us-east-1",
    )
    for _ in range(100):
        try:
            client.create_bucket(Bucket=BUCKET)
            break
        except Exception:  # noqa: BLE001 - the server is still starting
            time.sleep(0.1)
    else:
        proc.kill()
        raise SystemExit("moto_server did not start")
    return proc, url


def settings_for(tmp: Path, s3_url: str | None) -> Settings:
    """Backends local, postgres (registry database) and, optionally, s3 on moto."""
    backends: dict[str, LocalBackendSettings | PostgresBackendSettings | S3BackendSettings] = {
        "local": LocalBackendSettings(name="local", root=tmp / "blobs"),
        "postgres": PostgresBackendSettings(name="postgres"),
    }
    if s3_url is not None:
        os.environ[S3_KEY_VAR] = "bench"
        os.environ[S3_SECRET_VAR] = "bench"
        backends["s3"] = S3BackendSettings(
            name="s3",
            bucket=BUCKET,
            endpoint_url=s3_url,
            access_key_ref=SecretRef(f"env:{S3_KEY_VAR}", "s3.access_key_ref"),
            secret_key_ref=SecretRef(f"env:{S3_SECRET_VAR}", "s3.secret_key_ref"),
        )
    return Settings(
        data_dir=tmp / "data",
        database=DatabaseSettings(),
        storage=StorageSettings(default="local", backends=dict(backends)),
    )


async def fill(registry: Registry, name: str, blobs: list[tuple[int, int, BlobDigests]]) -> Row:
    """Put every blob into one backend (timed), record it, read it back (timed)."""
    backend = registry.store.backend(name)
    row = Row(name, sum(size for _, size, _ in blobs))
    stored = []
    start = time.perf_counter()
    for seed, size, d in blobs:
        info = await backend.put_stream(d.sha256, achunks(size, seed), size)
        stored.append(BlobStored(d.sha256.raw, d.blake3.raw, size, name, info.key))
    row.ingest_s = time.perf_counter() - start
    async with registry.engine.begin() as conn:
        await record(conn, stored, actor="bench")
    start = time.perf_counter()
    for _, _, d in blobs:
        stream = await backend.get(d.sha256)
        async for _piece in stream.chunks:
            pass
    row.download_s = time.perf_counter() - start
    return row


def sha256sum_seconds(root: Path) -> tuple[float, int]:
    """Wall time of ``sha256sum`` over every blob file under ``root``, and bytes read."""
    files = sorted(str(p) for p in root.rglob("*") if p.is_file())
    total = sum(Path(f).stat().st_size for f in files)
    start = time.perf_counter()
    subprocess.run(["sha256sum", *files], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, total


async def main(count: int, size: int, s3_total: int | None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="as-bench-verify-"))
    moto: subprocess.Popen[bytes] | None = None
    try:
        s3_url = None
        if s3_total is not None:
            moto, s3_url = start_moto()
        print(f"generating digests of {count} x {size // MIB} MiB ...", file=sys.stderr)
        blobs = [
            (seed, size, await asyncio.to_thread(digests_of, size, seed)) for seed in range(count)
        ]
        registry = await Registry.open(settings_for(tmp, s3_url))
        rows: list[Row] = []
        try:
            plan: list[tuple[str, list[tuple[int, int, BlobDigests]]]] = [
                ("local", blobs),
                ("postgres", blobs),
            ]
            if s3_total is not None:
                s3_count = max(1, s3_total // size)
                s3_size = min(size, s3_total)
                s3_blobs = [
                    (1000 + i, s3_size, await asyncio.to_thread(digests_of, s3_size, 1000 + i))
                    for i in range(s3_count)
                ]
                plan.append(("s3", s3_blobs))
            for name, items in plan:
                print(f"filling {name} ...", file=sys.stderr)
                rows.append(await fill(registry, name, items))
            for row in rows:
                print(f"verifying {row.name} ...", file=sys.stderr)
                start = time.perf_counter()
                report = await verify_storage(registry, backends=[row.name], actor="bench")
                row.verify_s = time.perf_counter() - start
                if not report.ok or report.bytes != row.total:
                    row.notes.append(f"VERIFY NOT OK: {report.to_json()['counts']}")
            local = registry.store.backend("local")
            assert isinstance(local, LocalBackend)
            sum_s, sum_bytes = await asyncio.to_thread(sha256sum_seconds, local.root)
        finally:
            await registry.aclose()
        py_sha = sha256_rate(512 * MIB)
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"{'backend':<10} {'data':>9} {'ingest':>11} {'download':>11} {'verify':>10}  notes")
    for r in rows:
        print(
            f"{r.name:<10} {r.total / GIB:>7.2f} G {r.total / r.ingest_s / 1e6:>7,.0f} MB/s"
            f" {r.total / r.download_s / 1e6:>7,.0f} MB/s {r.total / r.verify_s / 1e9:>6.2f} GB/s"
            f"  {'; '.join(r.notes)}"
        )
    print(
        f"{'sha256sum':<10} {sum_bytes / GIB:>7.2f} G {'':>12} {'':>12}"
        f"{sum_bytes / sum_s / 1e9:>6.2f} GB/s  (local files, same run, page cache)"
    )
    print(f"{'hashlib':<10} {'':>9} {'':>12} {'':>12}{py_sha / 1e9:>6.2f} GB/s  (sha256, 1 thread)")
    print(f"cores: {os.cpu_count()}; verify hashes sha256 and blake3, sha256sum only sha256")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=16, help="number of blobs")
    parser.add_argument("--mib", type=int, default=128, help="size of each blob in MiB")
    parser.add_argument("--s3-mib", type=int, default=256, help="total MiB for s3 (moto)")
    parser.add_argument("--no-s3", action="store_true", help="skip the s3 backend")
    args = parser.parse_args()
    asyncio.run(main(args.count, args.mib * MIB, None if args.no_s3 else args.s3_mib * MIB))
