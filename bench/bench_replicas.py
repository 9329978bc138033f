"""Small publishes through 3 replicas against 1 behind nginx, in the same run (issue 13).

One run on this machine, every process on its two cores (``_cluster.py``):
one PostgreSQL 15 cluster (durable settings), one S3 endpoint (moto's server,
or ``--s3-endpoint`` such as a Ceph RGW, keys in ``--s3-key-env``/
``--s3-secret-env``), and per phase ``artifactstore serve`` replicas with
their own data dirs, a fresh database and key prefix, the S3 backend as the
only target, behind nginx (round-robin, no affinity). ``--order`` gives the
replica count of each phase (default ``1,3,3,1``: each count measured early
and late, so drift of the VM shows).

1. The machine: cores, load average, sha256 (hashlib, one thread) and ``cp``
   / ``cp`` + ``sync -f`` of the upload file, the limits the other
   benchmarks print.
2. Each phase: ``--publishes`` single-file versions of distinct 4 KiB
   content from ``--clients`` client processes through nginx
   (``POST /v1/blobs`` + ``PUT`` manifest, or the upload session where
   the server does not take the one-request blob, as ``bench_publish.py``
   does); publishes/s, p50/p99, the machine's CPU busy share, and the CPU
   seconds per publish of each role (replicas, PostgreSQL with its backends,
   nginx, the S3 server, the clients) from ``/proc``: where the machine is
   busy and one role takes most of it, that role is the bound.
3. Peers, in the first phase with one replica: the same publishes straight
   to the replica (what nginx costs), and 4 KiB static GETs from nginx by
   the same client processes (the ceiling of the harness itself).
4. Each phase: one ``--upload-mib`` file through an upload session via
   nginx (``POST``, ``--chunk-mib`` PATCHes that land on the replicas in
   turn, ``PUT``), and the same on the zero-configuration default (embedded
   PostgreSQL, ``local`` backend, one server, no nginx): MB/s and x sha256.

The ratio 3 replicas / 1 replica (means over the phases) is printed with its
target (>= 0.9x). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

import httpx

from _clients import Rate, RestTarget, patcher, probe_post_blobs, run_clients, session_upload
from _cluster import (
    CpuMeter,
    Postgres,
    S3Endpoint,
    postmaster_pid,
    start_lb,
    start_moto,
    start_postgres,
    start_replicas,
)
from _common import (
    MIB,
    SmallFile,
    add_s3_options,
    cp_rates,
    in_work_dir,
    load_average,
    mb,
    server_env,
    sha256_file,
    start_server,
    stop_process,
    wait_http,
    write_random_file,
)
from artifactstore.client.rawhttp import FileSender

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import ExitStack
    from pathlib import Path

SMALL = 4096
WARM_CHUNK = 256 * 1024  # the warm-up session: 1 MiB in four PATCHes, spread over the replicas


@dataclass(frozen=True)
class StaticGet:
    """nginx serving one 4 KiB file: a client process's call is one GET of it."""

    url: str

    def connect(self, stack: ExitStack) -> Callable[[str, SmallFile], None]:
        """One httpx client; the name and file are ignored."""
        client = stack.enter_context(httpx.Client(timeout=60))

        def get(_name: str, _f: SmallFile) -> None:
            got = client.get(self.url)
            if got.status_code != 200 or len(got.content) != SMALL:
                raise RuntimeError(f"GET {self.url}: {got.status_code}")

        return get


@dataclass
class Upload:
    """One large upload through a session: wall seconds and the servers' CPU, or why it failed."""

    seconds: float = 0.0
    patching: float = 0.0  # of which in PATCHes; the rest is POST and the PUT finalize
    cpu: dict[str, float] = field(default_factory=dict)
    error: str = ""


@dataclass
class Phase:
    """One deployment's figures."""

    replicas: int  # behind nginx
    idle: int  # running on the same database, not routed to
    rate: Rate
    cpu: dict[str, float]
    others: str  # the biggest other processes, CPU ms per publish
    upload: Upload


@dataclass
class Results:
    """Every figure of a run, filled in as it goes."""

    load_start: str
    sha_rate: float = 0.0
    sha_rate_after: float = 0.0
    cp_rate: float = 0.0
    cp_sync_rate: float = 0.0
    pg_bindir: str = ""
    s3_note: str = ""
    blob_path: str = ""
    phases: list[Phase] = field(default_factory=list)
    direct: Rate | None = None
    static: Rate | None = None
    embedded: Upload | None = None


@dataclass
class Run:
    """What every phase shares."""

    args: argparse.Namespace
    work: Path
    pg: Postgres
    s3: S3Endpoint
    s3_pid: int | None
    big: Path
    big_sha: str
    warm: Path
    warm_sha: str
    static_root: Path
    log: IO[bytes]


def send_file(api: str, token: str, file: Path, sha: str, chunk: int) -> float:
    """``file`` through one session at ``api`` in ``chunk`` PATCHes; seconds spent in PATCHes."""
    sender = FileSender(api, {"Authorization": f"Bearer {token}"}, timeout=600)
    patching = 0.0
    patch = patcher(sender, file)

    async def send(session: str, offset: int, length: int) -> int:
        nonlocal patching
        started = time.perf_counter()
        try:
            return await patch(session, offset, length)
        finally:
            patching += time.perf_counter() - started

    try:
        asyncio.run(session_upload(api, token, file.stat().st_size, sha, send, chunk))
    finally:
        sender.close()
    return patching


def upload(api: str, token: str, run: Run, roles: dict[str, list[int]]) -> Upload:
    """The run's file in ``--chunk-mib`` PATCHes after a small warm-up session; CPU by role."""
    try:
        send_file(api, token, run.warm, run.warm_sha, WARM_CHUNK)
        meter = CpuMeter(roles)
        meter.start()
        started = time.perf_counter()
        patching = send_file(api, token, run.big, run.big_sha, run.args.chunk_mib * MIB)
        seconds = time.perf_counter() - started
        meter.stop()
    except (RuntimeError, httpx.HTTPError, OSError) as exc:
        return Upload(error=str(exc)[:160])
    return Upload(seconds, patching, meter.used)


def run_phase(run: Run, index: int, shape: tuple[int, int], res: Results) -> Phase:
    """Start replicas (serving, idle) and nginx on a fresh database; publishes, peers, one upload.

    Idle replicas run on the same database but nginx does not route to them.
    """
    (n, idle), args = shape, run.args
    name = f"p{index}_{n}r{idle}i"
    url = run.pg.create_database(name)
    config = run.work / f"{name}.toml"
    extra = run.s3.config(config, key_prefix=name)
    print(f"phase {index + 1}: {n} replica(s), {idle} idle ...", flush=True)
    replicas = start_replicas(
        n + idle, run.work / name, database_url=url, config=config, extra_env=extra, log=run.log
    )
    nginx = None
    try:
        nginx, lb = start_lb(run.work / name / "nginx", replicas.urls[:n], run.static_root)
        wait_http(f"{lb}/readyz", nginx)
        one_request = probe_post_blobs(lb, replicas.token)
        res.blob_path = "POST /v1/blobs" if one_request else "upload session"
        pids = [p.pid for p in replicas.processes]
        roles = {"replicas": pids[:n]} | ({"idle replicas": pids[n:]} if idle else {})
        roles |= {"postgres": [run.pg.postmaster_pid()], "nginx": [nginx.pid]}
        if run.s3_pid is not None:
            roles["s3"] = [run.s3_pid]
        roles["clients"] = [os.getpid()]  # what is left of this benchmark's tree
        meter = CpuMeter(roles)
        target = RestTarget(lb, replicas.token, one_request)
        rate = run_clients(target, args.publishes, args.clients, args.warmup, meter)
        others = ", ".join(f"{proc} {s / rate.count * 1000:.1f}" for proc, s in meter.others)
        if n == 1 and not idle and res.direct is None:
            print("  peers: straight to the replica, nginx static ...", flush=True)
            direct = RestTarget(replicas.urls[0], replicas.token, one_request, prefix="direct-")
            res.direct = run_clients(direct, args.publishes, args.clients, args.warmup)
            static = StaticGet(f"{lb}/static/small.bin")
            res.static = run_clients(static, args.publishes, args.clients, args.warmup)
        print(f"  {args.upload_mib} MiB upload session ...", flush=True)
        up = upload(lb, replicas.token, run, {k: v for k, v in roles.items() if k != "clients"})
        return Phase(n, idle, rate, meter.used, others, up)
    finally:
        stop_process(nginx)
        replicas.stop()


def embedded_upload(run: Run) -> Upload:
    """The same upload on the zero-configuration default: one server, embedded database."""
    data_dir = run.work / "embedded"
    server, api, _ = start_server(data_dir, server_env(), log=run.log)
    try:
        wait_http(f"{api}/readyz", server)
        token = (data_dir / "admin-token").read_text(encoding="ascii").strip()
        postmaster = postmaster_pid(data_dir / "postgres" / "data")  # the embedded cluster
        return upload(api, token, run, {"server": [server.pid], "postgres": [postmaster]})
    finally:
        stop_process(server, 60)


def main_run(args: argparse.Namespace, work: Path, res: Results, stack: ExitStack) -> None:
    """Every measurement, in order; cleanup is registered on ``stack``."""
    print("machine limits ...", flush=True)
    big = work / "big.bin"
    write_random_file(big, args.upload_mib * MIB)
    big_hex, res.sha_rate = sha256_file(big)
    warm = work / "warm.bin"
    write_random_file(warm, MIB)
    warm_sha = f"sha256:{sha256_file(warm)[0]}"
    res.cp_rate, res.cp_sync_rate = cp_rates(big)
    static_root = work / "static"
    static_root.mkdir()
    (static_root / "small.bin").write_bytes(os.urandom(SMALL))

    log = stack.enter_context((work / "servers.log").open("wb"))
    pg = start_postgres(work / "pg")
    stack.callback(pg.stop)
    res.pg_bindir = pg.bindir
    s3_pid = None
    if args.s3_endpoint:
        s3 = S3Endpoint(
            args.s3_endpoint,
            os.environ[args.s3_key_env],
            os.environ[args.s3_secret_env],
            args.s3_bucket,
        )
        s3.ensure_bucket()
        res.s3_note = f"{args.s3_endpoint} (given)"
    else:
        moto, s3 = start_moto(log)
        stack.callback(stop_process, moto)
        s3_pid = moto.pid
        res.s3_note = f"moto_server {s3.url}"
    run = Run(
        args, work, pg, s3, s3_pid, big, f"sha256:{big_hex}", warm, warm_sha, static_root, log
    )
    for index, shape in enumerate(args.order):
        res.phases.append(run_phase(run, index, shape, res))
    print("embedded default upload ...", flush=True)
    res.embedded = embedded_upload(run)
    res.sha_rate_after = sha256_file(big)[1]


def upload_cell(up: Upload, size: int, sha_rate: float) -> tuple[str, str]:
    """(value, note) of an upload row."""
    if up.error:
        return "failed", up.error
    rate = size / up.seconds
    cpu = ", ".join(f"{role} {s:.2f}" for role, s in up.cpu.items())
    return mb(rate), (
        f"{up.seconds:.2f} s ({up.patching:.2f} in PATCHes), {rate / sha_rate:.2f}x sha256;"
        f" CPU s: {cpu}"
    )


def report(args: argparse.Namespace, res: Results) -> None:
    """The table."""
    size = args.upload_mib * MIB
    rows: list[tuple[str, str, str]] = [
        ("cores", str(os.cpu_count()), f"load average at start {res.load_start}"),
        ("sha256, hashlib, 1 thread", mb(res.sha_rate), f"after the run {mb(res.sha_rate_after)}"),
        ("cp / cp + sync -f", mb(res.cp_rate), f"cp + sync {mb(res.cp_sync_rate)}"),
        ("PostgreSQL", "1 cluster", f"{res.pg_bindir}; durable settings"),
        ("S3 backend", "1 endpoint", res.s3_note),
        ("blob path of a publish", res.blob_path, "then PUT manifest"),
    ]
    for k, phase in enumerate(res.phases):
        r = phase.rate
        per = ", ".join(f"{role} {s / r.count * 1000:.1f}" for role, s in phase.cpu.items())
        rows += [
            (
                f"phase {k + 1}: {phase.replicas} replica(s) via nginx"
                + (f" + {phase.idle} idle" if phase.idle else ""),
                f"{r.per_second:,.0f} /s",
                (
                    f"{r.count:,} in {r.seconds:.2f} s; p50 {r.p50 * 1000:.1f} ms,"
                    f" p99 {r.p99 * 1000:.1f} ms; machine CPU busy {r.cpu_busy:.0%}"
                ),
            ),
            ("  CPU ms per publish", "", per),
            ("  other processes, ms per publish", "", phase.others or "-"),
        ]
    by_count: dict[int, list[float]] = {}
    for phase in res.phases:
        if not phase.idle:
            by_count.setdefault(phase.replicas, []).append(phase.rate.per_second)
    if 1 in by_count and 3 in by_count:
        one, three = statistics.mean(by_count[1]), statistics.mean(by_count[3])
        note = f"{three:,.0f} vs {one:,.0f} /s (target >= 0.9x)"
        rows.append(("3 replicas vs 1", f"{three / one:.2f}x", note))
    if res.direct is not None:
        rows.append(("1 replica, no nginx", f"{res.direct.per_second:,.0f} /s", "same clients"))
    if res.static is not None:
        rows.append(
            ("nginx static 4 KiB GETs", f"{res.static.per_second:,.0f} /s", "the harness ceiling")
        )
    for k, phase in enumerate(res.phases):
        value, note = upload_cell(phase.upload, size, res.sha_rate)
        rows.append((f"{args.upload_mib} MiB session, phase {k + 1}", value, note))
    if res.embedded is not None:
        value, note = upload_cell(res.embedded, size, res.sha_rate)
        rows.append((f"{args.upload_mib} MiB session, embedded default", value, note))
    print()
    print(
        f"Replica benchmark: {args.publishes:,} publishes of {SMALL} B per phase, "
        f"{args.clients} client processes; {args.chunk_mib} MiB PATCHes"
    )
    for name, value, note in rows:
        print(f"  {name:<40} {value:>12}   {note}")
    print(f"load average at end: {load_average()}")


def phase_shape(text: str) -> tuple[int, int]:
    """``3`` -> (3, 0); ``1+2`` -> (1, 2): replicas behind nginx, idle replicas beside them."""
    serving, _, idle = text.partition("+")
    return int(serving), int(idle or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--publishes", type=int, default=1000, help="publishes per phase")
    parser.add_argument("--clients", type=int, default=12, help="client processes")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up publishes per client")
    parser.add_argument(
        "--order",
        type=lambda s: [phase_shape(x) for x in s.split(",")],
        default="1,3,3,1",
        help="replicas behind nginx per phase, in order; 1+2: one routed, two idle beside it",
    )
    parser.add_argument("--upload-mib", type=int, default=256, help="the upload session's file")
    parser.add_argument("--chunk-mib", type=int, default=64, help="bytes per PATCH")
    add_s3_options(parser, "bench-replicas")
    args = parser.parse_args()
    args.s3_endpoint = args.s3_endpoint or os.environ.get("S3_ENDPOINT_URL")

    res = Results(load_start=load_average())
    print(f"load average at start: {res.load_start}", flush=True)
    in_work_dir("bench-replicas-", lambda work, stack: main_run(args, work, res, stack))
    report(args, res)


if __name__ == "__main__":
    main()
