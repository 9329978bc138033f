"""CLI -> server -> local backend: 1 GiB up and down, small publishes, server RSS.

Measured in one run, on one machine, against the real ``artifactstore serve``
(a subprocess on free ports, embedded PostgreSQL and the ``local`` backend in
a temporary data dir under /tmp, zero configuration):

1. This machine's limits over a generated 1 GiB file: single-thread sha256
   (hashlib, 1 MiB reads) and ``cp`` of the file in the same directory, with
   and without ``sync -f`` of the copy.
2. ``python -m artifactstore.cli upload big 1.0 <file>`` and ``download big
   1.0 --output <dir>``, wall clock of the subprocess (interpreter start-up
   included); the downloaded bytes are compared with the source by sha256.
   The CLI hashes with blake3 only and learns sha256 from the server, which
   computes it over every byte received. The server is on this machine, so the
   CLI hands the open file over the server's Unix socket (``api/handoff.py``)
   and the server reads it; then a second 1 GiB file goes with
   ``--no-handoff``, its bytes in 256 MiB PATCHes over loopback HTTP, as from
   another machine (``cli/upload.py``).
   The installed modules are compiled to bytecode first, as any installed
   Python program's are after its first run (where ``PYTHONDONTWRITEBYTECODE``
   is set, as on this machine, every start would otherwise compile ~300
   modules from source: 0.9 s instead of 0.35 s per CLI run).
3. Publishes per second of 1,000 versions of one 4 KiB file (distinct random
   content per version) with 8 concurrent httpx clients over the REST API:
   POST /v1/uploads, PATCH, PUT finalize, PUT the JSON manifest.
4. The server process's RSS (VmRSS every 50 ms, and VmHWM) throughout.

Targets (issue 3): upload >= 0.6x sha256; download >= 0.6x cp (synced);
server RSS <= 200 MiB throughout. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from _common import (
    GIB,
    MIB,
    RssSampler,
    SmallFile,
    compile_installed,
    cp_rates,
    load_average,
    mb,
    mib,
    one_file_manifest,
    percentile,
    server_env,
    sha256_file,
    small_files,
    start_server,
    stop_process,
    wait_http,
    write_random_file,
)

SMALL = 4096
WORKERS = 8
WARMUP_PUBLISHES = 16
RSS_TARGET = 200 * MIB


def run_cli(args: list[str], env: dict[str, str]) -> float:
    """Run ``python -m artifactstore.cli ARGS``; wall-clock seconds."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "artifactstore.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed


async def publish_one(client: httpx.AsyncClient, package: str, version: str, f: SmallFile) -> None:
    """One version of one 4 KiB file: create session, PATCH, PUT finalize, PUT manifest."""
    created = await client.post(
        "/v1/uploads",
        json={"size": SMALL, "sha256": f"sha256:{f.sha256}", "blake3": f"blake3:{f.blake3}"},
    )
    if created.status_code == 201:
        location = created.headers["location"]
        patched = await client.patch(location, content=f.data, headers={"Upload-Offset": "0"})
        if patched.status_code != 204:
            raise RuntimeError(f"PATCH {location}: {patched.status_code} {patched.text[:300]}")
        done = await client.put(location, params={"sha256": f.sha256, "blake3": f.blake3})
        if done.status_code != 201:
            raise RuntimeError(f"PUT {location}: {done.status_code} {done.text[:300]}")
    elif created.status_code != 200:
        raise RuntimeError(f"POST /v1/uploads: {created.status_code} {created.text[:300]}")
    manifest = one_file_manifest(package, version, f)
    put = await client.put(f"/v1/packages/{package}/versions/{version}", json=manifest)
    if put.status_code != 201:
        raise RuntimeError(f"PUT {package} {version}: {put.status_code} {put.text[:300]}")


async def publish_many(
    api: str, token: str, package: str, files: list[SmallFile], workers: int
) -> tuple[float, list[float]]:
    """Publish ``files`` as versions 1..N with ``workers`` clients; (seconds, latencies)."""
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    async with httpx.AsyncClient(
        base_url=api, headers=headers, limits=limits, timeout=60
    ) as client:
        todo = iter(enumerate(files, start=1))

        async def worker() -> None:
            for n, f in todo:
                started = time.perf_counter()
                await publish_one(client, package, str(n), f)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies


def main() -> None:  # noqa: PLR0915 - one linear script
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of the big file in GiB")
    parser.add_argument("--versions", type=int, default=1000, help="small versions to publish")
    args = parser.parse_args()
    total = int(args.gib * GIB)

    print(f"load average at start: {load_average()}", flush=True)
    compile_installed()
    work = Path(tempfile.mkdtemp(prefix="bench-transfer-", dir="/tmp"))
    data_dir = work / "data"
    env = server_env()
    log = (work / "server.log").open("wb")
    server: subprocess.Popen[bytes] | None = None
    sampler: RssSampler | None = None
    try:
        print("starting the server ...", flush=True)
        started = time.perf_counter()
        server, api, _ = start_server(data_dir, env, log=log)
        sampler = RssSampler(server.pid)
        sampler.start()
        wait_http(f"{api}/healthz", server)
        startup = time.perf_counter() - started
        sampler.phase = "idle"
        time.sleep(1.0)
        token = (data_dir / "admin-token").read_text(encoding="ascii").strip()
        cli_env = {
            **env,
            "ARTIFACTSTORE_DATA_DIR": str(data_dir),
            "ARTIFACTSTORE_SERVER": api,
            "XDG_CACHE_HOME": str(work / "cache"),
        }

        print(f"generating {total / GIB:g} GiB of random data ...", flush=True)
        big = work / "big.bin"
        write_random_file(big, total)
        print("sha256 and cp ...", flush=True)
        source_sha, sha_rate = sha256_file(big)
        cp_rate, cp_sync_rate = cp_rates(big)
        cli_start = run_cli(["--help"], cli_env)

        print("upload ...", flush=True)
        sampler.phase = "upload"
        up_s = run_cli(["upload", "big", "1.0", str(big)], cli_env)
        # The same size again, other bytes (the first file's blob is stored now),
        # sent over HTTP as from another machine.
        big_http = work / "big-http.bin"
        write_random_file(big_http, total)
        print("upload over HTTP ...", flush=True)
        sampler.phase = "upload-http"
        http_s = run_cli(["upload", "big-http", "1.0", str(big_http), "--no-handoff"], cli_env)
        big_http.unlink()
        print("download ...", flush=True)
        sampler.phase = "download"
        out = work / "out"
        down_s = run_cli(["download", "big", "1.0", "--output", str(out)], cli_env)
        sampler.phase = "between"
        got_sha, _ = sha256_file(out / big.name)
        same = got_sha == source_sha
        (out / big.name).unlink()

        print(f"{args.versions:,} small publishes ...", flush=True)
        warm = small_files(WARMUP_PUBLISHES)
        files = small_files(args.versions)
        asyncio.run(publish_many(api, token, "small-warmup", warm, WORKERS))
        sampler.phase = "small"
        small_s, latencies = asyncio.run(publish_many(api, token, "small", files, WORKERS))
        sampler.phase = "end"
        sampler.sample()
    finally:
        stop_process(server, timeout=60)
        if sampler is not None:
            sampler.stop()
        log.close()
        shutil.rmtree(work, ignore_errors=True)

    up_rate, http_rate, down_rate = total / up_s, total / http_s, total / down_s
    peak, hwm = sampler.peak(), sampler.hwm
    target = f"target <= {mib(RSS_TARGET)}"
    rows = [
        ("server start-up to /healthz", f"{startup:.1f} s", ""),
        ("CLI start-up (--help)", f"{cli_start:.2f} s", "included in the CLI timings"),
        ("sha256 (hashlib, 1 MiB reads)", mb(sha_rate), "this machine, this run"),
        ("cp (no sync)", mb(cp_rate), "page cache only"),
        ("cp + sync -f", mb(cp_sync_rate), "durable copy"),
        (
            "upload (CLI, wall clock)",
            mb(up_rate),
            f"{up_s:.2f} s; {up_rate / sha_rate:.2f}x sha256 (target >= 0.60x); file handed over",
        ),
        (
            "upload over HTTP (--no-handoff)",
            mb(http_rate),
            f"{http_s:.2f} s; {http_rate / sha_rate:.2f}x sha256; bytes over loopback TCP",
        ),
        (
            "download (CLI, wall clock)",
            mb(down_rate),
            (
                f"{down_s:.2f} s; {down_rate / cp_sync_rate:.2f}x cp+sync (target >= 0.60x), "
                f"{down_rate / cp_rate:.2f}x cp"
            ),
        ),
        ("downloaded bytes == source", "yes" if same else "NO", f"sha256 {source_sha[:16]}..."),
        ("server RSS baseline (idle)", mib(sampler.median("idle")), "median over 1 s"),
        ("server RSS peak, upload", mib(sampler.peak("upload")), ""),
        ("server RSS peak, upload over HTTP", mib(sampler.peak("upload-http")), ""),
        ("server RSS peak, download", mib(sampler.peak("download")), ""),
        ("server RSS peak, small", mib(sampler.peak("small")), ""),
        (
            "server RSS peak (50 ms samples)",
            mib(peak),
            f"{target}: {'met' if peak <= RSS_TARGET else 'MISSED'}",
        ),
        (
            "server VmHWM (kernel peak)",
            mib(hwm),
            f"{target}: {'met' if hwm <= RSS_TARGET else 'MISSED'}",
        ),
        (
            f"small publishes ({WORKERS} clients)",
            f"{len(latencies) / small_s:,.0f} /s" if latencies else "skipped",
            f"{len(latencies):,} versions in {small_s:.2f} s",
        ),
        (
            "publish latency p50 / p95",
            f"{percentile(latencies, 0.5) * 1000:.1f} ms",
            f"p95 {percentile(latencies, 0.95) * 1000:.1f} ms",
        ),
    ]
    print()
    print(f"Transfer benchmark: {total / GIB:g} GiB file, {len(sampler.samples):,} RSS samples")
    for name, value, note in rows:
        print(f"  {name:<32} {value:>12}   {note}")
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
