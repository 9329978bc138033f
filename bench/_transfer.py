"""Helpers of ``bench_transfer.py``: data, timed commands, checks, the peers' set-up, the table.

Only ``bench_transfer.py`` uses these; what several scripts share is in
``_common.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from _common import mib, one_file_manifest

if TYPE_CHECKING:
    from _common import RssSampler, SmallFile

SMALL = 4096
WORKERS = 8  # concurrent clients of the small publishes
WARMUP_PUBLISHES = 16
TREE_DIRS = 20  # the tree's files are spread over this many directories
GW_ACCESS_KEY = "bench"
GW_SECRET_KEY = "bench-secret-0123456789"  # noqa: S105 - a throwaway benchmark credential


def evict(path: Path) -> None:
    """Drop ``path``'s clean pages from the page cache, so the next read starts cold."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def tool(name: str) -> str | None:
    """An executable of this environment (``artifactstore``, ``aws``), else one on PATH."""
    local = Path(sysconfig.get_path("scripts")) / name
    return str(local) if local.exists() else shutil.which(name)


def run(args: list[str], env: dict[str, str] | None = None) -> float:
    """Run a command to its end; wall-clock seconds. Raises with its stderr when it fails."""
    started = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        name = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(args[:3]))
        raise RuntimeError(f"{name} failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed


def run_synced(args: list[str], env: dict[str, str] | None, written: Path) -> float:
    """``run`` and then ``sync -f`` of what it wrote: a peer's durable copy, like the CLI's."""
    started = time.perf_counter()
    run(args, env)
    run(["sync", "-f", str(written)])
    return time.perf_counter() - started


def cp_sync_times(source: Path, reps: int, *, cold: bool = False) -> list[float]:
    """Seconds of ``cp`` + ``sync -f`` of the copy, ``reps`` times (``cold``: source evicted)."""
    copy = source.with_name(source.name + ".cp")
    times = []
    for _ in range(reps):
        if cold:
            evict(source)
        times.append(run_synced(["cp", str(source), str(copy)], None, copy))
        copy.unlink()
    return times


def make_tree(root: Path, count: int, size: int) -> dict[str, str]:
    """``count`` files of ``size`` random bytes under ``root``; relative path -> sha256 hex."""
    digests = {}
    for i in range(count):
        rel = f"{root.name}/d{i % TREE_DIRS:02d}/f{i:05d}.bin"
        data = os.urandom(size)
        path = root.parent / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        digests[rel] = hashlib.sha256(data).hexdigest()
    return digests


def tree_digests(root: Path) -> dict[str, str]:
    """Every regular file under ``root``: path relative to ``root`` -> sha256 hex."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def aws_env(env: dict[str, str], home: Path) -> dict[str, str]:
    """The aws CLI's environment: the gateway credential, a private HOME (no ~/.aws), no proxy."""
    home.mkdir(parents=True, exist_ok=True)
    proxies = {"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"}
    clean = {k: v for k, v in env.items() if not k.startswith("AWS_") and k not in proxies}
    return {
        **clean,
        "HOME": str(home),
        "AWS_ACCESS_KEY_ID": GW_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": GW_SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
    }


def stored_blob(data_dir: Path, sha256_hex: str) -> Path:
    """The local backend's file of a blob under ``data_dir`` (``storage.spi.object_key``)."""
    h = sha256_hex
    found = sorted(data_dir.glob(f"**/sha256/{h[:2]}/{h[2:4]}/{h}"))
    if not found:
        raise RuntimeError(f"blob sha256:{h} is not stored under {data_dir}")
    return found[0]


def served(log: Path, offset: int) -> str:
    """What the server's access logs (REST and gateway) show moved since ``offset``.

    Bytes in and out per way (``handoff``: the Unix socket; ``http``: the
    REST API; ``s3``: the gateway), so the table says which path a command
    really took (a client falls back to HTTP when the handoff is refused).
    Ways that moved under 5% of the bytes are left out, unless they are
    handoffs: a handed-over descriptor may move no bytes through the server.
    """
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    moved: dict[str, list[int]] = {}
    for line in text.splitlines():
        head, sep, body = line.partition(" artifactstore.")
        logger, _, payload = body.partition(" ")
        if not sep or logger not in {"access", "gateway.access"} or not head.endswith("INFO"):
            continue
        entry = json.loads(payload)
        way = "s3" if logger == "gateway.access" else "http"
        if entry.get("method") == "HANDOFF" or entry.get("client") == "unix":
            way = "handoff"
        counts = moved.setdefault(way, [0, 0])
        counts[0] += 1
        counts[1] += int(entry.get("in", 0)) + int(entry.get("out", 0))
    total = sum(b for _, b in moved.values()) or 1
    return ", ".join(
        f"{way} {n} req {b / 1e6:,.{0 if b >= 1e8 else 1}f} MB"
        for way, (n, b) in sorted(moved.items())
        if b >= total * 0.05 or way == "handoff"
    )


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table; empty strings print as blanks."""

    what: str
    seconds: str = ""
    rate: str = ""
    ratio: str = ""
    target: str = ""
    met: str = ""
    path: str = ""


def rate_mb(size: int, seconds: float) -> str:
    """Bytes in seconds as MB/s (10^6), the unit of docs/PERFORMANCE.md."""
    return f"{size / seconds / 1e6:,.0f} MB/s"


def rate_files(count: int, seconds: float) -> str:
    """Files per second, the rate of the small-file tree."""
    return f"{count / seconds:,.0f} files/s"


def timed_row(
    what: str,
    size: int,
    seconds: float,
    versus: tuple[str, float] | None,
    target: float | None,
    *,
    path: str = "",
    files: int = 0,
) -> Row:
    """A timed transfer of ``size`` bytes; ``versus`` is (name, its seconds for the same bytes).

    The ratio is a rate ratio (the peer's seconds over ours: 2.0x = twice as
    fast) and the target a minimum of that ratio.
    """
    ratio = met = goal = ""
    if versus is not None:
        name, theirs = versus
        value = theirs / seconds
        ratio = f"{value:.3g}x {name}"  # 3 digits: 0.548x is not 0.55x
        if target is not None:
            goal, met = f">= {target:g}x", "yes" if value >= target else "NO"
    rate = rate_files(files, seconds) if files else rate_mb(size, seconds)
    return Row(what, f"{seconds:.2f}", rate, ratio, goal, met, path)


def spread(times: list[float]) -> str:
    """The min / median seconds of repeated runs."""
    return f"{min(times):.2f} / {statistics.median(times):.2f}"


def rss_rows(s: RssSampler, bound: int) -> list[Row]:
    """The server's RSS per phase, and its peak against ``bound``."""
    rows = [Row("server RSS, idle (median over 1 s)", rate=mib(s.median("idle")))]
    rows += [
        Row(f"server RSS peak, {phase}", rate=mib(s.peak(phase)))
        for phase in dict.fromkeys(p for p, _ in s.samples)
        if phase not in {"start-up", "idle", "between", "end"}
    ]
    for what, value in (("50 ms samples", s.peak()), ("VmHWM, kernel", s.hwm)):
        met = "yes" if value <= bound else "NO"
        rows.append(
            Row(f"server RSS peak ({what})", rate=mib(value), target=f"<= {mib(bound)}", met=met)
        )
    return rows


def print_table(title: str, rows: list[Row]) -> None:
    """The run's one table."""
    header = Row("what", "seconds", "rate", "vs limit / peer", "target", "met", "server saw")
    width = max(len(r.what) for r in [header, *rows])
    print(f"\n{title}")
    for r in [header, *rows]:
        print(
            f"  {r.what:<{width}}  {r.seconds:>11}  {r.rate:>12}  {r.ratio:<22}  "
            f"{r.target:<10}  {r.met:<4} {r.path}".rstrip()
        )


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
    api: str, token: str, package: str, files: list[SmallFile]
) -> tuple[float, list[float]]:
    """Publish ``files`` as versions 1..N with ``WORKERS`` clients; (seconds, latencies)."""
    limits = httpx.Limits(max_connections=WORKERS, max_keepalive_connections=WORKERS)
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
        await asyncio.gather(*(worker() for _ in range(WORKERS)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies
