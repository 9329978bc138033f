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

``--s3-endpoint URL`` adds a backend ``s3-ext`` on a real endpoint (e.g. Ceph
RGW from ``../shared/services/ceph-rgw/start``), keys from the environment
(``--s3-key-env``/``--s3-secret-env``, default ``S3_ACCESS_KEY_ID`` and
``S3_SECRET_ACCESS_KEY``), bucket ``--s3-bucket`` (created if missing), under
a key prefix of its own that is deleted afterwards.

For every S3 endpoint the same bytes are also put with plain boto3, once as
one PUT per blob and once as a multipart upload with the backend's part size
and part concurrency (threads): the endpoint's own ceiling in the same run,
printed as ``<name> raw PUT`` and ``<name> raw MPU`` rows (ingest only).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from _common import GIB, MIB, free_port, sha256_rate, stop_process
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
from artifactstore.registry.journal import transaction
from artifactstore.registry.verify import verify_storage
from artifactstore.storage.local import LocalBackend
from artifactstore.storage.s3 import DEFAULT_PART_CONCURRENCY, part_size_for

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from mypy_boto3_s3 import S3Client

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


@dataclass(frozen=True)
class S3Target:
    """One S3 endpoint to benchmark: backend name, URL, bucket, key prefix, key variables."""

    name: str
    url: str
    bucket: str
    prefix: str
    key_var: str
    secret_var: str

    def settings(self) -> S3BackendSettings:
        """The backend's settings (default part size and threshold)."""
        return S3BackendSettings(
            name=self.name,
            bucket=self.bucket,
            endpoint_url=self.url,
            key_prefix=self.prefix,
            access_key_ref=SecretRef(f"env:{self.key_var}", "s3.access_key_ref"),
            secret_key_ref=SecretRef(f"env:{self.secret_var}", "s3.secret_key_ref"),
        )

    def client(self, pool: int = 10) -> S3Client:
        """A plain boto3 client set up as the backend's (path style, checksums when required)."""
        import boto3  # noqa: PLC0415 - only when S3 is benchmarked
        from botocore.config import Config  # noqa: PLC0415

        config = Config(
            region_name="us-east-1",
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"},
            max_pool_connections=pool,
        )
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=os.environ[self.key_var],
            aws_secret_access_key=os.environ[self.secret_var],
            config=config,
        )

    def ensure_bucket(self, attempts: int = 100) -> None:
        """Create the bucket unless it exists (retrying while a server starts)."""
        client = self.client()
        for _ in range(attempts):
            try:
                client.head_bucket(Bucket=self.bucket)
            except client.exceptions.ClientError:
                client.create_bucket(Bucket=self.bucket)
                return
            except Exception:  # noqa: BLE001 - the server is still starting
                time.sleep(0.1)
            else:
                return
        raise SystemExit(f"{self.url}: bucket {self.bucket} cannot be reached")


def start_moto() -> tuple[subprocess.Popen[bytes], S3Target]:
    """A moto_server subprocess on a free port, with the bucket created."""
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ[S3_KEY_VAR] = "bench"
    os.environ[S3_SECRET_VAR] = "bench"
    target = S3Target("s3", f"http://127.0.0.1:{port}", BUCKET, "", S3_KEY_VAR, S3_SECRET_VAR)
    try:
        target.ensure_bucket()
    except BaseException:
        proc.kill()
        raise
    return proc, target


def raw_put_seconds(
    target: S3Target, blobs: list[tuple[int, int, BlobDigests]]
) -> tuple[float, float]:
    """Seconds to put every blob with plain boto3: one PUT each, then multipart.

    The multipart upload uses the backend's part size and concurrency, parts
    on threads. Bodies are generated before the clock starts; every object
    is deleted afterwards (outside the timing).
    """
    concurrency = DEFAULT_PART_CONCURRENCY
    client = target.client(pool=2 * concurrency)
    chunk_bytes = target.settings().multipart_chunk_bytes
    single = multi = 0.0
    for seed, size, _ in blobs:
        body = b"".join(chunks(size, seed))
        key = f"{target.prefix}/raw/{seed}".lstrip("/")
        start = time.perf_counter()
        client.put_object(Bucket=target.bucket, Key=f"{key}-put", Body=body)
        single += time.perf_counter() - start
        part = part_size_for(size, chunk_bytes)
        parts = [body[i : i + part] for i in range(0, size, part)]
        start = time.perf_counter()
        upload = client.create_multipart_upload(Bucket=target.bucket, Key=f"{key}-mpu")
        uid = upload["UploadId"]

        def put_part(n: int, data: bytes, key: str = key, uid: str = uid) -> str:
            resp = client.upload_part(
                Bucket=target.bucket, Key=f"{key}-mpu", UploadId=uid, PartNumber=n, Body=data
            )
            return resp["ETag"]

        with ThreadPoolExecutor(concurrency) as pool:
            etags = list(pool.map(put_part, range(1, len(parts) + 1), parts))
        client.complete_multipart_upload(
            Bucket=target.bucket,
            Key=f"{key}-mpu",
            UploadId=uid,
            MultipartUpload={
                "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]
            },
        )
        multi += time.perf_counter() - start
        for suffix in ("-put", "-mpu"):
            client.delete_object(Bucket=target.bucket, Key=f"{key}{suffix}")
    return single, multi


def settings_for(tmp: Path, s3_targets: list[S3Target]) -> Settings:
    """Backends local, postgres (registry database) and the S3 targets."""
    backends: dict[str, LocalBackendSettings | PostgresBackendSettings | S3BackendSettings] = {
        "local": LocalBackendSettings(name="local", root=tmp / "blobs"),
        "postgres": PostgresBackendSettings(name="postgres"),
    }
    for target in s3_targets:
        backends[target.name] = target.settings()
    return Settings(
        data_dir=tmp / "data",
        database=DatabaseSettings(),
        storage=StorageSettings(default="local", backends=backends),
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
    async with transaction(registry.engine, actor="bench") as tx:
        await tx.record(*stored)
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


async def raw_rows(targets: list[S3Target], blobs: list[tuple[int, int, BlobDigests]]) -> list[Row]:
    """The ``raw PUT`` and ``raw MPU`` rows of every S3 target."""
    rows = []
    total = sum(size for _, size, _ in blobs)
    for target in targets:
        print(f"raw boto3 puts to {target.name} ...", file=sys.stderr)
        single_s, multi_s = await asyncio.to_thread(raw_put_seconds, target, blobs)
        rows.append(Row(f"{target.name} raw PUT", total, ingest_s=single_s))
        rows.append(Row(f"{target.name} raw MPU", total, ingest_s=multi_s))
    return rows


async def verify_rows(registry: Registry, rows: list[Row]) -> None:
    """Time ``verify_storage`` of every backend row (raw rows have no backend)."""
    for row in rows:
        if row.download_s == 0:
            continue
        print(f"verifying {row.name} ...", file=sys.stderr)
        start = time.perf_counter()
        report = await verify_storage(registry, backends=[row.name], actor="bench")
        row.verify_s = time.perf_counter() - start
        if not report.ok or report.bytes != row.total:
            row.notes.append(f"VERIFY NOT OK: {report.to_json()['counts']}")


def print_table(rows: list[Row], sum_s: float, sum_bytes: int, py_sha: float) -> None:
    """The figures, each ingest also as a multiple of local's (same run)."""

    def rate(seconds: float, total: int, unit: float, fmt: str) -> str:
        return format(total / seconds / unit, fmt) if seconds else f"{'-':>7}"

    print()
    print(time.strftime("%Y-%m-%d %H:%M %Z"))
    print(f"{'backend':<16} {'data':>9} {'ingest':>11} {'download':>11} {'verify':>10}  notes")
    local_rate = rows[0].total / rows[0].ingest_s
    for r in rows:
        notes = list(r.notes)
        if r.name != "local":
            notes.insert(0, f"ingest {r.total / r.ingest_s / local_rate:.2f}x local")
        print(
            f"{r.name:<16} {r.total / GIB:>7.2f} G {rate(r.ingest_s, r.total, 1e6, '>7,.0f')} MB/s"
            f" {rate(r.download_s, r.total, 1e6, '>7,.0f')} MB/s"
            f" {rate(r.verify_s, r.total, 1e9, '>6.2f')} GB/s  {'; '.join(notes)}"
        )
    print(
        f"{'sha256sum':<16} {sum_bytes / GIB:>7.2f} G {'':>12} {'':>12}"
        f"{sum_bytes / sum_s / 1e9:>6.2f} GB/s  (local files, same run, page cache)"
    )
    print(f"{'hashlib':<16} {'':>9} {'':>12} {'':>12}{py_sha / 1e9:>6.2f} GB/s  (sha256, 1 thread)")
    print(f"cores: {os.cpu_count()}; verify hashes sha256 and blake3, sha256sum only sha256")


async def main(
    count: int, size: int, s3_total: int, *, moto_s3: bool, ext: S3Target | None
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="as-bench-verify-"))
    moto: subprocess.Popen[bytes] | None = None
    try:
        targets: list[S3Target] = []
        if moto_s3:
            moto, target = start_moto()
            targets.append(target)
        if ext is not None:
            ext.ensure_bucket(attempts=1)
            targets.append(ext)
        print(f"generating digests of {count} x {size // MIB} MiB ...", file=sys.stderr)
        blobs = [
            (seed, size, await asyncio.to_thread(digests_of, size, seed)) for seed in range(count)
        ]
        rows: list[Row] = []
        async with await Registry.open(settings_for(tmp, targets)) as registry:
            plan: list[tuple[str, list[tuple[int, int, BlobDigests]]]] = [
                ("local", blobs),
                ("postgres", blobs),
            ]
            s3_blobs: list[tuple[int, int, BlobDigests]] = []
            if targets:
                s3_count = max(1, s3_total // size)
                s3_size = min(size, s3_total)
                s3_blobs = [
                    (1000 + i, s3_size, await asyncio.to_thread(digests_of, s3_size, 1000 + i))
                    for i in range(s3_count)
                ]
                plan += [(target.name, s3_blobs) for target in targets]
            for name, items in plan:
                print(f"filling {name} ...", file=sys.stderr)
                rows.append(await fill(registry, name, items))
            rows += await raw_rows(targets, s3_blobs)
            await verify_rows(registry, rows)
            local = registry.store.backend("local")
            assert isinstance(local, LocalBackend)
            sum_s, sum_bytes = await asyncio.to_thread(sha256sum_seconds, local.root)
            if ext is not None:
                backend = registry.store.backend(ext.name)
                for _, _, d in s3_blobs:
                    await backend.delete(d.sha256)
        py_sha = sha256_rate(512 * MIB)
    finally:
        stop_process(moto)
        shutil.rmtree(tmp, ignore_errors=True)

    print_table(rows, sum_s, sum_bytes, py_sha)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=16, help="number of blobs")
    parser.add_argument("--mib", type=int, default=128, help="size of each blob in MiB")
    parser.add_argument("--s3-mib", type=int, default=256, help="total MiB for each s3 backend")
    parser.add_argument("--no-s3", action="store_true", help="skip the s3 backend on moto")
    parser.add_argument("--s3-endpoint", help="also benchmark this S3 endpoint as s3-ext")
    parser.add_argument("--s3-bucket", default=BUCKET, help="bucket on --s3-endpoint")
    parser.add_argument("--s3-key-env", default="S3_ACCESS_KEY_ID", help="variable with the key")
    parser.add_argument(
        "--s3-secret-env", default="S3_SECRET_ACCESS_KEY", help="variable with the secret"
    )
    args = parser.parse_args()
    external = None
    if args.s3_endpoint:
        external = S3Target(
            "s3-ext",
            args.s3_endpoint,
            args.s3_bucket,
            f"bench-verify-{os.getpid()}-{int(time.time())}",
            args.s3_key_env,
            args.s3_secret_env,
        )
    asyncio.run(
        main(args.count, args.mib * MIB, args.s3_mib * MIB, moto_s3=not args.no_s3, ext=external)
    )
