"""Uploads of a 1 GiB file to a server on this machine: handoff ``store`` vs the session paths.

Measured in one run against the real ``artifactstore serve`` (a subprocess on
free ports, embedded PostgreSQL and the ``local`` backend in a temporary data
dir under /tmp), each over its own freshly written 1 GiB file of random bytes
(in the page cache, as a file just built is):

1. This machine's limits: single-thread sha256 (hashlib, 1 MiB reads) and
   ``cp`` of the file plus ``sync -f`` of the copy.
2. ``HandoffClient.store`` of a file (the server reads, hashes and stores
   it; the client hashes nothing), then of the same file again (the server
   hashes it, finds the blob held and drops the staged bytes).
3. Today's handoff path: ``POST /v1/uploads`` (size), ``HandoffClient.append``
   in 256 MiB ranges, ``PUT`` finalize with the sha256 (computed beforehand,
   not timed: the CLI sends blake3 alone, any one digest will do).
4. Over HTTP: the same session, the body sent by ``client.rawhttp.FileSender``
   (``sendfile(2)``) in 256 MiB PATCHes, then the finalize.

Each row also gives the server process's CPU seconds (user + system, from
``/proc/<pid>/stat``) for the operation, which says whether a path is bound
by the CPU or by waiting. Targets: handoff store >= 0.55x sha256, HTTP PATCH
>= 0.35x sha256 (whole client call, wall clock). Prints a table; asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import blake3
import httpx

from _clients import patcher, session_upload
from _common import (
    GIB,
    MIB,
    cp_rates,
    cpu_seconds,
    load_average,
    mb,
    server_env,
    sha256_file,
    start_server,
    stop_process,
    wait_http,
    write_random_file,
)
from artifactstore.client.handoff import HandoffClient
from artifactstore.client.rawhttp import FileSender

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Awaitable, Callable

CHUNK = 256 * MIB


async def timed(pid: int, call: Callable[[], Awaitable[object]]) -> tuple[float, float, object]:
    """(wall seconds, server CPU seconds, result) of one awaited call."""
    cpu = cpu_seconds(pid)
    started = time.perf_counter()
    result = await call()
    return time.perf_counter() - started, cpu_seconds(pid) - cpu, result


Row = tuple[str, float, float, str]


def appender(handoff: HandoffClient, file: Path) -> Callable[[str, int, int], Awaitable[int]]:
    """A ``send`` for ``session_upload`` that hands ranges of ``file`` over."""

    async def append(session: str, offset: int, length: int) -> int:
        return await handoff.append(session, file, offset, length)

    return append


async def warm_up(
    api: str, token: str, handoff: HandoffClient, sender: FileSender, work: Path
) -> None:
    """One small upload by each path, so no timed run pays for the server's first imports."""
    for n, name in enumerate(("store", "append", "patch")):
        small = work / f"warm-{name}.bin"
        await asyncio.to_thread(write_random_file, small, MIB + n)
        sha = "sha256:" + (await asyncio.to_thread(sha256_file, small))[0]
        if name == "store":
            await handoff.store(small, MIB + n)
        else:
            send = appender(handoff, small) if name == "append" else patcher(sender, small)
            await session_upload(api, token, MIB + n, sha, send, CHUNK)


def handoff_client(api: str, token: str) -> HandoffClient:
    """The server's handoff socket and id, as the CLI learns them (``GET /v1/uploads/handoff``)."""
    answer = httpx.get(
        f"{api}/v1/uploads/handoff", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    answer.raise_for_status()
    return HandoffClient(answer.json()["socket"], answer.json()["server"])


async def run(api: str, pid: int, token: str, files: list[Path]) -> list[Row]:
    """The timed operations, in order; rows of (label, wall s, server CPU s, note)."""
    handoff = handoff_client(api, token)
    sender = FileSender(api, {"Authorization": f"Bearer {token}"}, timeout=600)
    first, second, third = files
    size = first.stat().st_size
    rows: list[Row] = []
    try:
        await warm_up(api, token, handoff, sender, first.parent)
        wall, cpu, answer = await timed(pid, lambda: handoff.store(first, size))
        assert isinstance(answer, dict)
        rows.append(("handoff store (new blob)", wall, cpu, f"created={answer['created']}"))
        wall, cpu, answer = await timed(pid, lambda: handoff.store(first, size))
        assert isinstance(answer, dict)
        rows.append(("handoff store again (dedupe)", wall, cpu, f"created={answer['created']}"))

        sha = "sha256:" + (await asyncio.to_thread(sha256_file, second))[0]  # not timed
        send = appender(handoff, second)
        wall, cpu, _ = await timed(pid, lambda: session_upload(api, token, size, sha, send, CHUNK))
        rows.append(("session + handoff append + PUT", wall, cpu, "today's CLI path"))

        sha = "sha256:" + (await asyncio.to_thread(sha256_file, third))[0]  # not timed
        send = patcher(sender, third)
        wall, cpu, _ = await timed(pid, lambda: session_upload(api, token, size, sha, send, CHUNK))
        rows.append(("session + HTTP PATCH (sendfile) + PUT", wall, cpu, "256 MiB PATCHes"))
    finally:
        sender.close()
    return rows


def blake3_seconds(file: Path) -> float:
    """Seconds for blake3 of ``file`` on every core (what a remote client computes to name it)."""
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    started = time.perf_counter()
    with file.open("rb", buffering=0) as f:
        while block := f.read(16 * MIB):
            hasher.update(block)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of each file in GiB")
    args = parser.parse_args()
    total = int(args.gib * GIB)

    print(f"load average at start: {load_average()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-handoff-", dir="/tmp"))
    data_dir = work / "data"
    log = (work / "server.log").open("wb")
    server: subprocess.Popen[bytes] | None = None
    try:
        server, api, _ = start_server(data_dir, server_env(), log=log)
        wait_http(f"{api}/healthz", server)
        token = (data_dir / "admin-token").read_text(encoding="ascii").strip()
        print(f"generating 3 x {total / GIB:g} GiB of random data ...", flush=True)
        files = [work / f"big{i}.bin" for i in range(3)]
        for f in files:
            write_random_file(f, total)
        print("sha256 and cp ...", flush=True)
        _, sha_rate = sha256_file(files[0])
        _, cp_sync_rate = cp_rates(files[0])
        print("uploads ...", flush=True)
        rows = asyncio.run(run(api, server.pid, token, files))
        client_b3_s = blake3_seconds(files[2])
        _, sha_rate_after = sha256_file(files[0])
    finally:
        stop_process(server, timeout=60)
        log.close()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"Handoff store benchmark: {total / GIB:g} GiB files, {os.cpu_count()} cores")
    sha_s, cp_s = total / sha_rate, total / cp_sync_rate
    print(f"{'sha256 (hashlib, 1 MiB reads)':42} {mb(sha_rate):>12} {sha_s:6.2f} s")
    print(
        f"{'  again after the uploads':42} {mb(sha_rate_after):>12} {total / sha_rate_after:6.2f} s"
    )
    print(f"{'cp + sync -f':42} {mb(cp_sync_rate):>12} {cp_s:6.2f} s")
    for label, wall, cpu, note in rows:
        rate = total / wall
        print(
            f"{label:42} {mb(rate):>12} {wall:6.2f} s  {rate / sha_rate:.2f}x sha256"
            f"  server CPU {cpu:.2f} s  {note}"
        )
    http_s = rows[-1][1] + client_b3_s
    print(
        f"{'  HTTP PATCH after a client blake3 pass':42} {mb(total / http_s):>12} {http_s:6.2f} s"
        f"  {total / http_s / sha_rate:.2f}x sha256  (blake3 on every core: {client_b3_s:.2f} s)"
    )
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
