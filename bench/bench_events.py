"""Event log at scale: ``events verify``, online ``events replay`` and a writer during it.

Builds a log of ``--events`` events (default 1,000,000) in a throwaway
embedded PostgreSQL: versions of ``--files`` files each, every file a
``v1.blob.stored``, every other one ``v1.storage.location_verified``, then
the ``v1.package.published`` (its real canonical manifest), and one version
in a hundred yanked. The events are chained by the real code
(``events.chain_events``: seq, prev_hash, blake3 hash) and written with
COPY in 50k-event chunks instead of one journal transaction each (that
would take hours); an initial online replay (timed, printed) then fills
the views, exactly as ``artifactstore events replay`` would.

Then, one figure per line:

* ``verify N events``: ``verify_chain`` in a REPEATABLE READ transaction,
  beside the machine limit: blake3 over the same rows' bytes in this process
  (the rows fetched beforehand, nothing but hashing timed).
* ``replay N events``: ``registry.rebuild.rebuild_views`` (the CLI's code)
  while a writer process publishes in a loop through ``Registry.ingest`` +
  ``Registry.publish``; the replay's locked part, and the writer's longest
  and median publish during the replay.
* unless ``--no-http``: ``artifactstore serve`` on the same database, the
  median of 20 requests each for ``GET /v1/packages?limit=100``, a
  package's page of versions, and an S3 ``ListObjectsV2`` of one package's
  bucket through the gateway (``max-keys=1000``, keys ``<version>/<path>``).
  ``GET .../versions/<v>`` is left out: it reads the manifest blob from
  storage, and the synthetic log stores no bytes.

Run under the shared lock (bench/README.md); ``--events 20000`` checks that
the script still runs.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import blake3
import httpx

from _common import server_env, start_server, stop_process, wait_http
from artifactstore.config import DatabaseSettings, Settings
from artifactstore.db.embedded import start_throwaway_cluster
from artifactstore.digests import Digest, hash_bytes
from artifactstore.events import (
    BlobStored,
    EventPayload,
    LocationVerified,
    LogHead,
    PackagePublished,
    PackageYanked,
    chain_events,
    verify_chain,
)
from artifactstore.manifest import ManifestFile, build_manifest, encode_manifest
from artifactstore.registry import Registry
from artifactstore.registry.rebuild import rebuild_views

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from sqlalchemy.ext.asyncio import AsyncEngine

CHUNK = 50_000
PACKAGES = 500
COLUMNS = ("seq", "id", "type", "occurred_at", "actor", "payload", "prev_hash", "hash")


def payloads(total: int, files: int) -> Iterator[EventPayload]:
    """About ``total`` events of publishes, their blobs and yanks (deterministic)."""
    produced = version = 0
    while produced < total:
        package = f"pkg-{version % PACKAGES:04d}"
        name = f"{version // PACKAGES}.0"
        entries = []
        for i in range(files):
            seed = f"{version}/{i}".encode()
            sha, b3 = hashlib.sha256(seed).digest(), blake3.blake3(seed).digest()
            size = 1000 + i
            yield BlobStored(sha, b3, size, "local", f"{sha.hex()[:2]}/{sha.hex()}")
            produced += 1
            if i % 2 == 0:
                yield LocationVerified(sha, "local")
                produced += 1
            entries.append(
                ManifestFile(
                    path=f"dir/file-{i}.bin",
                    size=size,
                    sha256=Digest("sha256", sha),
                    blake3=Digest("blake3", b3),
                )
            )
        manifest = encode_manifest(build_manifest(package, name, entries, {}))
        yield PackagePublished(package, name, hashlib.sha256(manifest).digest(), manifest)
        produced += 1
        if version % 100 == 99:
            yield PackageYanked(package, name, "bench")
            produced += 1
        version += 1


async def build_log(engine: AsyncEngine, total: int, files: int) -> int:
    """Chain and COPY about ``total`` events; return how many were written."""
    head = LogHead(0, bytes(32))
    batch: list[EventPayload] = []
    async with engine.begin() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection

        async def flush() -> None:
            nonlocal head
            chained = chain_events(head, batch, actor="bench", at=datetime.now(UTC))
            records = [
                (e.seq, e.id, e.type, e.occurred_at, e.actor, e.payload, e.prev_hash, e.hash)
                for e in chained
            ]
            await driver.copy_records_to_table("events", records=records, columns=COLUMNS)
            head = LogHead(chained[-1].seq, chained[-1].hash)
            batch.clear()

        for payload in payloads(total, files):
            batch.append(payload)
            if len(batch) == CHUNK:
                await flush()
        if batch:
            await flush()
    return head.seq


async def blake3_limit(engine: AsyncEngine) -> float:
    """Events/s of blake3 alone over the log's own rows, fetched beforehand (<= 200k rows)."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        rows = await raw.driver_connection.fetch(  # type: ignore[union-attr]
            "SELECT prev_hash, convert_to(type, 'UTF8'), payload FROM events"
            " ORDER BY seq LIMIT 200000"
        )
    pieces = [bytes(r[0]) + bytes(r[1]) + bytes(r[2]) for r in rows]
    start = time.perf_counter()
    for piece in pieces:
        blake3.blake3(piece).digest()
    return len(pieces) / (time.perf_counter() - start)


async def timed_verify(engine: AsyncEngine) -> tuple[int, float]:
    """``verify_chain`` as ``events verify`` runs it: (events, seconds)."""
    async with engine.connect() as conn:
        snap = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with snap.begin():
            start = time.perf_counter()
            report = await verify_chain(snap)
            return report.count, time.perf_counter() - start


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def writer(url: str, data_dir: str, stop_file: str) -> None:
    """Publish one-file versions until ``stop_file`` exists; print each publish's seconds."""
    stop = Path(stop_file)
    settings = Settings(data_dir=Path(data_dir), database=DatabaseSettings(url=url))
    took: list[float] = []
    async with await Registry.open(settings) as registry:
        n = 0
        while not stop.exists():  # noqa: ASYNC240 - a stat between publishes
            data = f"writer {n} {time.time_ns()}".encode()
            await registry.ingest(_chunks(data))
            d = hash_bytes(data)
            entry = ManifestFile(path="f.txt", size=d.size, sha256=d.sha256, blake3=d.blake3)
            start = time.perf_counter()
            await registry.publish(build_manifest("writer", f"{n}.0", [entry], {}))
            took.append(time.perf_counter() - start)
            n += 1
    print(json.dumps(took))


async def replay_with_writer(url: str, engine: AsyncEngine, work: Path) -> None:
    """Time the online replay while a writer process publishes; print both."""
    stop_file = work / "stop-writer"
    command = [sys.executable, __file__, "--writer", url, str(work / "writer-data"), str(stop_file)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE)  # noqa: ASYNC220 - one child
    await asyncio.sleep(3)  # the writer's start-up (imports, migration check)
    start = time.perf_counter()
    report = await rebuild_views(engine)
    seconds = time.perf_counter() - start
    stop_file.touch()
    out, _ = await asyncio.to_thread(proc.communicate)
    took = json.loads(out)
    print(
        f"replay {report.events} events: {report.events / seconds:,.0f} events/s ({seconds:.1f} s)"
    )
    print(
        f"replay under the log lock: {report.locked_events} events,"
        f" {report.locked_seconds * 1000:.0f} ms; {report.rounds} rounds without it"
    )
    if took:
        print(
            f"writer publishes during replay: {len(took)}, longest {max(took) * 1000:.0f} ms,"
            f" median {statistics.median(took) * 1000:.0f} ms"
        )


def listings(url: str, work: Path) -> None:
    """Median latencies of REST and S3 listings on a server over the same database."""
    config = work / "serve.toml"
    config.write_text(f'[database]\nurl = "{url}"\n')
    process, api, s3 = start_server(work / "serve-data", server_env(), config=config)
    try:
        wait_http(f"{api}/healthz", process)
        wait_http(f"{s3}/", process, any_status=True)
        with httpx.Client(timeout=60) as client:
            for label, target in (
                ("GET /v1/packages?limit=100", f"{api}/v1/packages?limit=100"),
                ("GET a package's versions (100)", f"{api}/v1/packages/pkg-0001?limit=100"),
                ("S3 ListObjectsV2 (1000 keys)", f"{s3}/pkg-0001?list-type=2&max-keys=1000"),
            ):
                took = []
                for _ in range(20):
                    start = time.perf_counter()
                    status = client.get(target).status_code
                    took.append(time.perf_counter() - start)
                print(f"{label}: median {statistics.median(took) * 1000:.1f} ms (HTTP {status})")
    finally:
        stop_process(process)


async def main(args: argparse.Namespace) -> None:
    """Build the log, then print verify, replay and listing figures."""
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # noqa: ASYNC240 - before anything runs
        url, stop_pg = start_throwaway_cluster(work / "pg")
        try:
            settings = Settings(data_dir=work / "data", database=DatabaseSettings(url=url))
            async with await Registry.open(settings, migrate=True) as registry:
                engine = registry.engine
                start = time.perf_counter()
                total = await build_log(engine, args.events, args.files)
                print(f"built {total} events in {time.perf_counter() - start:.1f} s (COPY)")
                start = time.perf_counter()
                await rebuild_views(engine)
                took = time.perf_counter() - start
                print(f"initial replay {total} events: {total / took:,.0f} events/s")
                limit = await blake3_limit(engine)
                count, seconds = await timed_verify(engine)
                print(
                    f"verify {count} events: {count / seconds:,.0f} events/s"
                    f" (limit: blake3 alone in-process {limit:,.0f} events/s)"
                )
                await replay_with_writer(url, engine, work)
            if not args.no_http:
                listings(url, work)
        finally:
            stop_pg()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--writer":
        asyncio.run(writer(*sys.argv[2:5]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="log size")
    parser.add_argument("--files", type=int, default=8, help="files per version")
    parser.add_argument("--no-http", action="store_true", help="skip the listing latencies")
    asyncio.run(main(parser.parse_args()))
