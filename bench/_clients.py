"""The client side of the publish benchmarks: small publishes from many processes.

``run_clients`` spawns client processes that each warm up, wait for the
others, then store files one after another through a ``Target`` (the REST
API here, an S3 endpoint in ``bench_publish``), and returns the rate and the
latencies. ``session_upload`` sends one large file through an upload
session in ranged PATCHes. Used by ``bench_publish.py`` and
``bench_replicas.py``; what one script alone uses stays in that script.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import httpx

from _common import SmallFile, one_file_manifest, percentile, small_files
from artifactstore.protocol import OFFSET_HEADER

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from artifactstore.client.rawhttp import FileSender

    Send = Callable[[str, int, int], Awaitable[int]]  # (session, offset, length) -> new offset
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier

SMALL = 4096
CLIENT_TIMEOUT = 600.0  # seconds a client process may take, warm-up included


def cpu_ticks() -> tuple[int, int]:
    """(busy, all) clock ticks of every core since boot (``/proc/stat``; idle and iowait idle)."""
    first = Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0]
    ticks = [int(x) for x in first.split()[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


class Meter(Protocol):
    """Something read when every client has started and again when the last one ends."""

    def start(self) -> None:
        """The clients have just been let go."""
        ...

    def stop(self) -> None:
        """The last client has reported."""
        ...


class Target(Protocol):
    """Where a client process sends its files; pickled into each process."""

    def connect(self, stack: ExitStack) -> Callable[[str, SmallFile], None]:
        """Open this process's client; return the call that stores one file under a name."""
        ...


@dataclass(frozen=True)
class RestTarget:
    """artifactstore's REST API: each file is one version of its own."""

    api: str
    token: str
    one_request: bool  # POST /v1/blobs; otherwise an upload session
    prefix: str = ""  # before each package name, so runs on one database do not collide

    def connect(self, stack: ExitStack) -> Callable[[str, SmallFile], None]:
        """One httpx client; a call is one publish (blob, then manifest)."""
        client = stack.enter_context(
            httpx.Client(
                base_url=self.api,
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=60,
            )
        )

        def publish(name: str, f: SmallFile) -> None:
            package, _, version = name.partition("/")
            package = self.prefix + package
            if self.one_request:
                if post_blob(client, f) not in {200, 201}:
                    raise RuntimeError("POST /v1/blobs is no longer served")
            else:
                session_blob(client, f)
            manifest = one_file_manifest(package, version, f)
            put = client.put(f"/v1/packages/{package}/versions/{version}", json=manifest)
            if put.status_code != 201:
                raise RuntimeError(f"PUT {package}/{version}: {put.status_code} {put.text[:300]}")

        return publish


def post_blob(client: httpx.Client, f: SmallFile) -> int:
    """``POST /v1/blobs`` with both digests; its status: 201/200, or 404/405 where not served."""
    done = client.post(
        "/v1/blobs",
        params={"sha256": f.sha256, "blake3": f.blake3},
        content=f.data,
        headers={"Content-Type": "application/octet-stream"},
    )
    if done.status_code not in {200, 201, 404, 405}:
        raise RuntimeError(f"POST /v1/blobs: {done.status_code} {done.text[:300]}")
    return done.status_code


def probe_post_blobs(api: str, token: str) -> bool:
    """Whether the server takes ``POST /v1/blobs`` (False on 404/405: the session path)."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=api, headers=headers, timeout=60) as client:
        return post_blob(client, small_files(1, SMALL)[0]) in {200, 201}


def session_blob(client: httpx.Client, f: SmallFile) -> None:
    """The blob through an upload session: POST /v1/uploads, PATCH, PUT finalize."""
    created = client.post(
        "/v1/uploads",
        json={"size": len(f.data), "sha256": f"sha256:{f.sha256}", "blake3": f"blake3:{f.blake3}"},
    )
    if created.status_code == 200:  # already held
        return
    if created.status_code != 201:
        raise RuntimeError(f"POST /v1/uploads: {created.status_code} {created.text[:300]}")
    location = created.headers["location"]
    patched = client.patch(location, content=f.data, headers={"Upload-Offset": "0"})
    if patched.status_code != 204:
        raise RuntimeError(f"PATCH {location}: {patched.status_code} {patched.text[:300]}")
    done = client.put(location, params={"sha256": f.sha256, "blake3": f.blake3})
    if done.status_code != 201:
        raise RuntimeError(f"PUT {location}: {done.status_code} {done.text[:300]}")


@dataclass(frozen=True)
class ClientResult:
    """What one client process measured (monotonic clock, shared by all processes)."""

    started: float
    ended: float
    latencies: list[float]
    error: str = ""


def client_process(  # noqa: PLR0917 - the arguments of a multiprocessing target
    target: Target,
    index: int,
    count: int,
    warmup: int,
    barrier: Barrier,
    results: Queue[ClientResult],
) -> None:
    """Warm up, wait for every client, then store ``count`` distinct files one after another."""
    try:
        files = small_files(warmup + count, SMALL)
        with ExitStack() as stack:
            store = target.connect(stack)
            for k, f in enumerate(files[:warmup]):
                store(f"warmup/{index}.{k}", f)
            barrier.wait(CLIENT_TIMEOUT)
            latencies = []
            started = time.monotonic()
            for k, f in enumerate(files[warmup:]):
                t0 = time.perf_counter()
                store(f"small/{index}.{k}", f)
                latencies.append(time.perf_counter() - t0)
            ended = time.monotonic()
        results.put(ClientResult(started, ended, latencies))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises
        barrier.abort()
        results.put(ClientResult(0.0, 0.0, [], error=f"client {index}: {exc!r}"))


@dataclass(frozen=True)
class Rate:
    """Operations over the whole run and per-operation latency."""

    count: int
    seconds: float
    p50: float
    p99: float
    cpu_busy: float  # the machine's, all cores, over the same time

    @property
    def per_second(self) -> float:
        """Operations per second over the run."""
        return self.count / self.seconds


def run_clients(
    target: Target, total: int, clients: int, warmup: int, meter: Meter | None = None
) -> Rate:
    """``total`` stores split over ``clients`` spawned processes, started together.

    ``meter`` is started when the clients are let go and stopped when the last
    one has reported, beside the machine's CPU counters.
    """
    ctx = multiprocessing.get_context("spawn")  # no fork under the RSS sampler's thread
    barrier = ctx.Barrier(clients + 1)  # and this process, to read the CPU counters
    results: Queue[ClientResult] = ctx.Queue()
    shares = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    processes = [
        ctx.Process(
            target=client_process,
            args=(target, i, shares[i], warmup, barrier, results),
            name=f"bench-client-{i}",
        )
        for i in range(clients)
    ]
    for p in processes:
        p.start()
    got: list[ClientResult] = []
    try:
        with contextlib.suppress(threading.BrokenBarrierError):  # a client failed: see below
            barrier.wait(CLIENT_TIMEOUT)
        busy_before, total_before = cpu_ticks()
        if meter is not None:
            meter.start()
        while len(got) < clients:
            try:
                got.append(results.get(timeout=1))
            except queue.Empty:
                if not any(p.is_alive() for p in processes) and results.empty():
                    raise RuntimeError("a client process died without a result") from None
        busy_after, total_after = cpu_ticks()
        if meter is not None:
            meter.stop()
    finally:
        for p in processes:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
    errors = [r.error for r in got if r.error]
    if errors:
        raise RuntimeError("; ".join(errors))
    latencies = [x for r in got for x in r.latencies]
    seconds = max(r.ended for r in got) - min(r.started for r in got)
    busy = (busy_after - busy_before) / max(1, total_after - total_before)
    return Rate(
        len(latencies),
        seconds,
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        busy,
    )


# ------------------------------------------------------ one large upload


async def session_upload(  # noqa: PLR0917 - one call of the protocol, spelled out
    api: str, token: str, size: int, sha: str, send: Send, chunk: int
) -> None:
    """Create a session, send ``size`` bytes in ``chunk`` ranges with ``send``, finalize."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=600) as client:
        created = await client.post("/v1/uploads", json={"size": size})
        created.raise_for_status()
        session = created.json()["id"]
        offset = 0
        while offset < size:
            offset = await send(session, offset, min(chunk, size - offset))
        done = await client.put(f"/v1/uploads/{session}", params={"sha256": sha})
        if done.status_code != 201:
            raise RuntimeError(f"PUT finalize: {done.status_code} {done.text[:300]}")


def patcher(sender: FileSender, file: Path) -> Send:
    """A ``send`` for ``session_upload`` that PATCHes ranges of ``file`` with ``sender``."""

    async def patch(session: str, offset: int, length: int) -> int:
        answer = await sender.send_range(
            "PATCH",
            f"/v1/uploads/{session}",
            file,
            offset,
            length,
            headers={OFFSET_HEADER: str(offset)},
        )
        if answer.status != 204:
            raise RuntimeError(f"PATCH answered {answer.status}: {answer.body[:200]!r}")
        return offset + length

    return patch
