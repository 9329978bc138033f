"""S3 gateway benchmark: large GETs against /v1/blobs and nginx, small-GET rate, listing latency.

Measured in one run, on one machine, against the real ``artifactstore serve``
(a subprocess with both listeners) on a throwaway PostgreSQL cluster:

1. GET of a 1 GiB object through the gateway, through ``/v1/blobs``, and
   from nginx serving the same file from disk (``apt-get install -y nginx``;
   run in the foreground from a temporary config). Client: ``curl`` to
   /dev/null, best of three, page cache warm.
2. 4 KiB GETs per second with 32 concurrent connections through the gateway
   (aiohttp in a separate process, a bounded number of requests, anonymous
   loopback reads and, separately, SigV4-presigned URLs).
3. ListObjectsV2 page latency (median) at 10k keys and at 1M keys (100
   versions x 10k files, published through ``Registry.publish``): first page,
   a page from the middle (start-after), delimiter listings at the root and
   in a version, and the root listing against a 10k-key package of the same
   shape (as many versions, 100 files each), so both return 100 prefixes.

Targets (issue 5): large GET >= 0.6x nginx; small GETs >= 1,500/s; page
latency at 1M <= 1.5x at 10k. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import sqlalchemy as sa

from _common import (
    GIB,
    agenerated_chunks,
    free_port,
    gateway_config,
    mb,
    server_env,
    start_nginx,
    start_server,
    stop_process,
    wait_http,
)
from artifactstore.config import DatabaseSettings, Settings
from artifactstore.db.embedded import start_throwaway_cluster
from artifactstore.gateway.sigv4 import presign_query
from artifactstore.manifest import ManifestFile, build_manifest
from artifactstore.registry import Registry

SMALL = 4096
CONCURRENCY = 32
ACCESS_KEY = "bench"
SECRET_KEY = "bench-secret-0123456789"  # noqa: S105 - a throwaway benchmark credential


async def generate(
    settings: Settings, big_bytes: int, versions: int, files_per_version: int
) -> dict[str, str]:
    """Publish the benchmark's packages; return facts the measurements need."""
    facts: dict[str, str] = {}
    async with await Registry.open(settings, migrate=True) as registry:
        started = time.perf_counter()
        blob = await registry.ingest(agenerated_chunks(big_bytes))
        await registry.publish(
            build_manifest(
                "big", "1", [ManifestFile("blob.bin", blob.size, blob.sha256, blob.blake3)]
            )
        )
        local = registry.store.backend("local")
        facts["big_path"] = str(local.path_for(blob.sha256))  # type: ignore[attr-defined]
        facts["big_sha"] = blob.sha256.hex
        print(
            f"  {big_bytes / GIB:g} GiB object ingested in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        sd = await registry.ingest_bytes(os.urandom(SMALL))
        entries = [ManifestFile(f"f/{i:05d}.bin", sd.size, sd.sha256, sd.blake3) for i in range(64)]
        await registry.publish(build_manifest("small", "1", entries))
        started = time.perf_counter()
        files = [
            ManifestFile(f"dir{i // 1000:02d}/file{i:05d}.bin", sd.size, sd.sha256, sd.blake3)
            for i in range(files_per_version)
        ]
        await registry.publish(build_manifest("k10k", "1.0.0", files))
        for v in range(versions):
            await registry.publish(build_manifest("k1m", f"1.0.{v:03d}", files))
            if v % 10 == 9:
                print(
                    f"  k1m: {v + 1} versions ({(v + 1) * files_per_version:,} keys) "
                    f"in {time.perf_counter() - started:.0f} s",
                    flush=True,
                )
        wide = [
            ManifestFile(f"dir/file{i:03d}.bin", sd.size, sd.sha256, sd.blake3)
            for i in range(files_per_version // versions)
        ]
        for v in range(versions):  # 10k keys shaped like k1m: as many versions, fewer files
            await registry.publish(build_manifest("k10k-wide", f"1.0.{v:03d}", wide))
        # Measure steady state, not autovacuum catching up with a million new rows.
        async with registry.engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.execute(sa.text("VACUUM ANALYZE"))
    return facts


def curl_rate(url: str, runs: int = 3) -> float:
    best = 0.0
    for _ in range(runs):
        done = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{speed_download} %{http_code}", url],
            capture_output=True,
            text=True,
            check=True,
        )
        speed, code = done.stdout.split()
        if code != "200":
            raise RuntimeError(f"{url}: HTTP {code}")
        best = max(best, float(speed))
    return best


def start_static_nginx(root: Path, port: int, work: Path) -> subprocess.Popen[bytes]:
    """Nginx serving ``root`` from disk on ``port`` (sendfile), the large GETs' peer."""
    server = f"server {{ listen 127.0.0.1:{port}; root {root}; location / {{ }} }}"
    http = f"  sendfile on;\n  tcp_nopush on;\n  {server}"
    return start_nginx(work, http, f"http://127.0.0.1:{port}/")


async def small_client(urls: list[str], count: int, concurrency: int) -> float:
    import aiohttp  # noqa: PLC0415 - only in the client process

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        todo = iter(range(count))
        bad = 0

        async def worker() -> None:
            nonlocal bad
            for i in todo:
                async with session.get(urls[i % len(urls)]) as resp:
                    body = await resp.read()
                    if resp.status != 200 or len(body) != SMALL:
                        bad += 1

        for i in range(min(200, count)):  # warm the connections and caches
            async with session.get(urls[i % len(urls)]) as resp:
                await resp.read()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    if bad:
        raise RuntimeError(f"{bad} small GETs failed")
    return count / elapsed


def run_small_client(urls: list[str], count: int) -> float:
    done = subprocess.run(
        [sys.executable, __file__, "--small-client", str(count)],
        input=json.dumps(urls),
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip())


def presigned(base: str, path: str) -> str:
    host = base.removeprefix("http://")
    query = presign_query(
        "GET",
        path,
        "",
        {"host": host},
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        now=datetime.now(UTC),
        expires=3600,
    )
    return f"{base}{path}?{query}"


def page_latency(client: httpx.Client, url: str, repeat: int = 15) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        got = client.get(url)
        times.append(time.perf_counter() - started)
        if got.status_code != 200:
            raise RuntimeError(f"{url}: {got.status_code} {got.text[:200]}")
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--big-gib", type=float, default=1.0)
    parser.add_argument("--versions", type=int, default=100)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--small-count", type=int, default=20_000)
    parser.add_argument("--small-client", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.small_client is not None:
        urls = json.loads(sys.stdin.read())
        print(asyncio.run(small_client(urls, args.small_client, CONCURRENCY)))
        return

    work = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    server: subprocess.Popen[bytes] | None = None
    nginx: subprocess.Popen[bytes] | None = None
    url, stop_pg = start_throwaway_cluster(work / "pg")
    try:
        data_dir = work / "data"
        settings = Settings(data_dir=data_dir, database=DatabaseSettings(url=url))
        print("generating data ...", flush=True)
        facts = asyncio.run(generate(settings, int(args.big_gib * GIB), args.versions, args.files))
        config = gateway_config(work, ACCESS_KEY, SECRET_KEY, anonymous=True)
        env = {**server_env(), "ARTIFACTSTORE_DATABASE_URL": url}
        server, api, gw = start_server(data_dir, env, config=config)
        wait_http(f"{api}/healthz", server, timeout=120)
        wait_http(f"{gw}/", server, timeout=120, any_status=True)
        big_path = Path(facts["big_path"])
        nginx_port = free_port()
        nginx = start_static_nginx(big_path.parent, nginx_port, work / "nginx")

        print("large GETs ...", flush=True)
        rates = {
            "nginx (sendfile, from disk)": curl_rate(
                f"http://127.0.0.1:{nginx_port}/{big_path.name}"
            ),
            "REST /v1/blobs": curl_rate(f"{api}/v1/blobs/sha256:{facts['big_sha']}"),
            "S3 gateway GetObject": curl_rate(f"{gw}/big/1/blob.bin"),
        }
        print("small GETs ...", flush=True)
        small_paths = [f"/small/1/f/{i:05d}.bin" for i in range(64)]
        anon_rate = run_small_client([gw + p for p in small_paths], args.small_count)
        signed_rate = run_small_client([presigned(gw, p) for p in small_paths], args.small_count)
        print("listing pages ...", flush=True)
        latency: dict[str, dict[str, float]] = {}
        with httpx.Client(timeout=60) as client:
            for bucket, versions in (("k10k", 1), ("k1m", args.versions)):
                mid_version = "1.0.0" if bucket == "k10k" else f"1.0.{versions // 2:03d}"
                mid = f"{mid_version}/dir05/file05000.bin"
                latency[bucket] = {
                    "first page (1000 keys)": page_latency(client, f"{gw}/{bucket}?list-type=2"),
                    "middle page (start-after)": page_latency(
                        client, f"{gw}/{bucket}?list-type=2&start-after={mid}"
                    ),
                    "delimiter '/' at root": page_latency(
                        client, f"{gw}/{bucket}?list-type=2&delimiter=/"
                    ),
                    "delimiter '/' in a version": page_latency(
                        client, f"{gw}/{bucket}?list-type=2&delimiter=/&prefix={mid_version}/"
                    ),
                }
            wide = page_latency(client, f"{gw}/k10k-wide?list-type=2&delimiter=/")
            latency["k10k"]["delimiter '/' at root, same shape"] = wide
            latency["k1m"]["delimiter '/' at root, same shape"] = latency["k1m"][
                "delimiter '/' at root"
            ]
        report(rates, anon_rate, signed_rate, latency, args)
    finally:
        stop_process(server)
        stop_process(nginx)
        stop_pg()
        shutil.rmtree(work, ignore_errors=True)


def report(
    rates: dict[str, float],
    anon_rate: float,
    signed_rate: float,
    latency: dict[str, dict[str, float]],
    args: argparse.Namespace,
) -> None:
    nginx = rates["nginx (sendfile, from disk)"]
    print()
    print(f"Large GET ({args.big_gib:g} GiB, curl, best of 3)")
    for name, rate in rates.items():
        print(f"  {name:<30} {mb(rate):>12}   {rate / nginx:5.2f}x nginx")
    print(f"\nSmall GETs ({SMALL} B, {CONCURRENCY} connections, {args.small_count:,} requests)")
    print(f"  {'anonymous (loopback)':<30} {anon_rate:>9,.0f} /s")
    print(f"  {'SigV4 presigned URLs':<30} {signed_rate:>9,.0f} /s")
    keys = args.versions * args.files
    print(f"\nListObjectsV2 page latency (median of 15): 10k keys vs {keys:,} keys")
    for name, small in latency["k10k"].items():
        large = latency["k1m"][name]
        print(f"  {name:<30} {small:8.1f} ms {large:8.1f} ms   {large / small:5.2f}x")


if __name__ == "__main__":
    main()
