"""Verified downloads: ``VerifiedFile`` from a file descriptor and over HTTP, against cp, curl, aws.

Measured in one run, on one machine, against the real ``artifactstore serve``
(a subprocess on free ports, embedded PostgreSQL and the ``local`` backend in
a temporary data dir under /tmp, the S3 gateway with one credential):

1. A random file of each ``--gib`` size is published through the REST API
   (upload session: ``POST /v1/uploads``, 256 MiB PATCHes sent with
   ``FileSender``, ``PUT`` finalize, ``PUT`` the manifest) and its stored
   blob file is found under the data dir.
2. Then, ``--rounds`` times, each with the stored blob dropped from the page
   cache first (``posix_fadvise(DONTNEED)``; the server wrote it with
   ``O_DIRECT``, so a first read is cold anyway), every output going to the
   same filesystem and each timed whole:

   - hashlib sha256 of the blob file (1 MiB reads, one thread);
   - ``cp`` of the blob file + ``sync -f`` of the copy (the disk's limit);
   - ``curl -o /dev/null`` from ``/v1/blobs`` (what the server can send);
   - ``curl -o FILE`` from ``/v1/blobs`` + ``sync -f``;
   - ``aws s3 cp`` from the S3 gateway + ``sync -f``;
   - the CLI of today, ``artifactstore download`` (process wall clock);
   - ``VerifiedFile.copy_from_fd`` from the stored blob file opened read-only
     (standing in for the descriptor the server will pass over its Unix
     socket), then ``commit`` (both digests checked, fsync, rename);
   - ``FileSender.get_into`` from ``/v1/blobs`` into a ``VerifiedFile``, then
     ``commit``.

Targets: fd copy >= 0.8x cp+sync; HTTP >= 0.5x cp+sync and >= 1.2x
aws s3 cp + sync. Prints the median of the rounds (with min-max) and the
ratios against cp+sync and aws of the same run; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import blake3
import httpx

from _common import (
    GIB,
    MIB,
    compile_installed,
    gateway_config,
    load_average,
    mb,
    server_env,
    start_server,
    stop_process,
    wait_http,
    write_random_file,
)
from _transfer import run as run_command
from artifactstore.client.rawhttp import FileSender
from artifactstore.client.sink import VerifiedFile
from artifactstore.digests import Digest

if TYPE_CHECKING:
    from collections.abc import Callable

PATCH_BYTES = 256 * MIB
ACCESS_KEY = "bench"
SECRET_KEY = "bench-secret-0123456789"  # noqa: S105 - a throwaway benchmark credential
PACKAGE = "big"


class Blob:
    """One published file: its size, digests, stored path and version."""

    def __init__(self, path: Path, version: str) -> None:
        sha, b3 = hashlib.sha256(), blake3.blake3()
        with path.open("rb", buffering=0) as f:
            while block := f.read(4 * MIB):
                sha.update(block)
                b3.update(block)
        self.size = path.stat().st_size
        self.sha256 = Digest("sha256", sha.digest())
        self.blake3 = Digest("blake3", b3.digest())
        self.version = version
        self.stored: Path | None = None

    def sink(self, target: Path) -> VerifiedFile:
        """A VerifiedFile for this blob at ``target``."""
        return VerifiedFile(target, size=self.size, sha256=self.sha256, blake3=self.blake3)


async def publish(api: str, token: str, source: Path, blob: Blob) -> None:
    """Upload session, PATCHes with sendfile, finalize, manifest: the REST API's big-file path."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=600) as client:
        created = await client.post(
            "/v1/uploads",
            json={"size": blob.size, "sha256": str(blob.sha256), "blake3": str(blob.blake3)},
        )
        if created.status_code == 201:
            location = created.headers["location"]
            sender = FileSender(api, headers)
            try:
                for offset in range(0, blob.size, PATCH_BYTES):
                    length = min(PATCH_BYTES, blob.size - offset)
                    answer = await sender.send_range(
                        "PATCH",
                        location,
                        source,
                        offset,
                        length,
                        headers={"Upload-Offset": str(offset)},
                    )
                    if answer.status != 204:
                        raise RuntimeError(f"PATCH: {answer.status} {answer.body[:300]!r}")
            finally:
                sender.close()
            done = await client.put(
                location, params={"sha256": blob.sha256.hex, "blake3": blob.blake3.hex}
            )
            if done.status_code != 201:
                raise RuntimeError(f"PUT {location}: {done.status_code} {done.text[:300]}")
        manifest = {
            "package": PACKAGE,
            "version": blob.version,
            "files": [
                {
                    "path": "blob.bin",
                    "size": blob.size,
                    "sha256": str(blob.sha256),
                    "blake3": str(blob.blake3),
                }
            ],
        }
        put = await client.put(f"/v1/packages/{PACKAGE}/versions/{blob.version}", json=manifest)
        if put.status_code != 201:
            raise RuntimeError(f"PUT manifest: {put.status_code} {put.text[:300]}")


def drop_cache(path: Path) -> None:
    """Evict ``path``'s pages (written back first), so the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def run(command: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stderr[-2000:]}")


def sha256_seconds(path: Path) -> float:
    started = time.perf_counter()
    h = hashlib.sha256()
    with path.open("rb", buffering=0) as f:
        while block := f.read(MIB):
            h.update(block)
    return time.perf_counter() - started


def copy_fd(blob: Blob, target: Path) -> None:
    assert blob.stored is not None
    fd = os.open(blob.stored, os.O_RDONLY)
    try:
        with blob.sink(target) as sink:
            sink.copy_from_fd(fd)
            sink.commit()
    finally:
        os.close(fd)


async def raw_get(api: str, token: str, blob: Blob, target: Path) -> None:
    sender = FileSender(api, {"Authorization": f"Bearer {token}"})
    try:
        with blob.sink(target) as sink:
            answer = await sender.get_into(f"/v1/blobs/{blob.sha256}", sink)
            if answer.status != 200:
                raise RuntimeError(f"GET: {answer.status} {answer.body[:300]!r}")
            await asyncio.to_thread(sink.commit)
    finally:
        sender.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, nargs="+", default=[1.0], help="file sizes in GiB")
    parser.add_argument("--rounds", type=int, default=3, help="times each row is measured")
    args = parser.parse_args()

    print(f"load average at start: {load_average()}", flush=True)
    compile_installed()
    work = Path(tempfile.mkdtemp(prefix="bench-download-", dir="/tmp"))
    data_dir = work / "data"
    out = work / "out"
    out.mkdir()
    config = gateway_config(work, ACCESS_KEY, SECRET_KEY, anonymous=False)
    env = server_env()
    log = (work / "server.log").open("wb")
    server: subprocess.Popen[bytes] | None = None
    results: dict[float, dict[str, list[float]]] = {}
    try:
        server, api, gw = start_server(data_dir, env, config=config, log=log)
        wait_http(f"{api}/healthz", server)
        wait_http(f"{gw}/", server, any_status=True)
        token = (data_dir / "admin-token").read_text(encoding="ascii").strip()
        cli_env = {
            **env,
            "ARTIFACTSTORE_DATA_DIR": str(data_dir),
            "ARTIFACTSTORE_SERVER": api,
            "ARTIFACTSTORE_TOKEN": token,
            "XDG_CACHE_HOME": str(work / "cache"),
        }
        aws_env = {
            **env,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(work / "aws-config"),
        }
        for gib in args.gib:
            source = work / "source.bin"
            print(f"generating and publishing {gib:g} GiB ...", flush=True)
            write_random_file(source, int(gib * GIB))
            blob = Blob(source, f"{gib:g}")
            asyncio.run(publish(api, token, source, blob))
            source.unlink()
            blob.stored = next(data_dir.rglob(blob.sha256.hex))
            url = f"{api}/v1/blobs/{blob.sha256}"
            target = out / "blob.bin"
            cli_out = out / f"{PACKAGE}-{blob.version}"

            rows = measurements(blob, url, gw, token, target, cli_out, envs=(aws_env, cli_env))
            times: dict[str, list[float]] = {name: [] for name in rows}
            for n in range(args.rounds):
                print(f"  round {n + 1}/{args.rounds}, load {load_average()}", flush=True)
                for name, measure in rows.items():
                    drop_cache(blob.stored)
                    started = time.perf_counter()
                    measure()
                    times[name].append(time.perf_counter() - started)
                    for leftover in (target, cli_out / "blob.bin"):
                        if leftover.exists():
                            check_copy(leftover, blob)
                            leftover.unlink()
            results[gib] = times
    finally:
        stop_process(server, timeout=60)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average at end: {load_average()}")
    report(results)


def measurements(  # noqa: PLR0917 - the run's facts, once
    blob: Blob,
    url: str,
    gw: str,
    token: str,
    target: Path,
    cli_out: Path,
    envs: tuple[dict[str, str], dict[str, str]],
) -> dict[str, Callable[[], object]]:
    """Each row's measurement, named; every one writes ``target`` (or ``cli_out``) or nothing."""
    stored = blob.stored
    assert stored is not None
    aws_env, cli_env = envs
    aws = str(Path(sys.executable).with_name("aws"))
    auth = f"Authorization: Bearer {token}"
    api = url.split("/v1/", maxsplit=1)[0]
    s3_url = f"s3://{PACKAGE}/{blob.version}/blob.bin"

    def synced(command: list[str], env: dict[str, str] | None = None) -> None:
        run(command, env)
        run(["sync", "-f", str(target)])

    return {
        "sha256": lambda: sha256_seconds(stored),
        "cp + sync": lambda: synced(["cp", str(stored), str(target)]),
        "curl -o /dev/null": lambda: run(["curl", "-sfo", "/dev/null", "-H", auth, url]),
        "curl -o + sync": lambda: synced(["curl", "-sfo", str(target), "-H", auth, url]),
        "aws s3 cp + sync": lambda: synced(
            [aws, "s3", "cp", "--only-show-errors", "--endpoint-url", gw, s3_url, str(target)],
            aws_env,
        ),
        "CLI download": lambda: run_command(
            [
                sys.executable,
                "-m",
                "artifactstore.cli",
                "download",
                PACKAGE,
                blob.version,
                "--output",
                str(cli_out),
            ],
            cli_env,
        ),
        "VerifiedFile from fd": lambda: copy_fd(blob, target),
        "get_into VerifiedFile": lambda: asyncio.run(raw_get(api, token, blob, target)),
    }


def check_copy(path: Path, blob: Blob) -> None:
    """Every output must hold the blob (size and sha256), or the timing means nothing."""
    h = hashlib.sha256()
    with path.open("rb", buffering=0) as f:
        while block := f.read(4 * MIB):
            h.update(block)
    if path.stat().st_size != blob.size or h.digest() != blob.sha256.raw:
        raise RuntimeError(f"{path} does not hold the blob")


def report(results: dict[float, dict[str, list[float]]]) -> None:
    for gib, times in results.items():
        size = gib * GIB
        median = {name: statistics.median(values) for name, values in times.items()}
        cp, aws = median["cp + sync"], median["aws s3 cp + sync"]
        print(f"\n{gib:g} GiB, median of {len(times['sha256'])} rounds (min-max)")
        print(
            "| what | seconds | rate | vs cp+sync | vs aws+sync |\n| --- | --- | --- | --- | --- |"
        )
        for name, values in times.items():
            s = median[name]
            print(
                f"| {name} | {s:.2f} ({min(values):.2f}-{max(values):.2f}) | {mb(size / s)} "
                f"| {cp / s:.2f}x | {aws / s:.2f}x |"
            )


if __name__ == "__main__":
    main()
