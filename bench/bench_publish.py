"""Small publishes and a 2,000-file tree, beside a real Ceph RGW in the same run (issue 10).

Measured in one run, on one machine, against the real ``artifactstore serve``
(a subprocess on free ports, embedded PostgreSQL and the ``local`` backend in
a temporary data dir under /tmp, zero configuration):

1. The machine: cores, load average at the start and the end, and how many
   4 KiB files a second its data-dir filesystem can create, write and fsync
   (one writer, then ``--clients`` writers on threads): small publishes are
   fsync-bound, so this is their limit.
2. ``--publishes`` single-file versions of distinct random 4 KiB content
   from ``--clients`` client processes (like a CI fleet; one httpx client
   each, one publish after another): ``POST /v1/blobs?sha256=&blake3=`` with
   the bytes (DESIGN section 10), then ``PUT`` of the JSON manifest.
   Where the server answers ``POST /v1/blobs`` with 404 or 405 (it predates
   section 10) each publish takes the session path instead: ``POST
   /v1/uploads``, ``PATCH``, ``PUT`` finalize, then the manifest (``--session``
   takes that path anyway, for comparison). The path used is printed.
   Publishes/s over the run and p50/p99 of one publish. Each process warms
   up first (``--warmup`` publishes) and all start together. The server's RSS
   is sampled every 50 ms throughout, and the machine's CPU busy share (all
   cores, ``/proc/stat``) is printed for this step and the next: where it is
   near 100% and the rate far below the fsync limit, CPU is the bound.
3. The peer: as many 4 KiB ``PutObject`` calls of distinct random content to
   a real Ceph RGW from as many boto3 processes (one client each), warmed up
   the same way; PUTs/s and p50/p99, and our rate as a multiple of RGW's.
4. A tree of ``--files`` 4 KiB files: ``python -m artifactstore.cli upload
   tree 1.0 <dir>`` (the installed modules compiled to bytecode first, as
   ``bench_transfer.py`` does) against ``aws s3 cp --recursive <dir>`` into
   the same RGW, each timed as a whole process (wall clock, start-up
   included). Files/s for both and the ratio.

The RGW: ``--s3-endpoint`` (or ``S3_ENDPOINT_URL``) with the keys in the
variables ``--s3-key-env``/``--s3-secret-env`` name (``S3_ACCESS_KEY_ID``,
``S3_SECRET_ACCESS_KEY``). Without an endpoint, and as root, the script runs
``--rgw-dir``/start (``../shared/services/ceph-rgw``; idempotent, installs
Ceph the first time) and, only if no RGW answered before, ``stop`` at the
end. Objects go under a key prefix of their own, deleted afterwards. No RGW
reachable: the peer rows say it was skipped.

Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from _clients import (
    SMALL,
    Rate,
    RestTarget,
    probe_post_blobs,
    run_clients,
)
from _common import (
    RssSampler,
    SmallFile,
    add_s3_options,
    compile_installed,
    in_work_dir,
    load_average,
    mib,
    server_env,
    start_server,
    stop_process,
    wait_http,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import ExitStack

    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

DEFAULT_RGW_DIR = Path(__file__).resolve().parents[2] / "shared" / "services" / "ceph-rgw"
DEFAULT_AWS = "/root/.pyenv/shims/aws"

# ---------------------------------------------------------------- the machine


def fsyncs_per_second(directory: Path, writers: int, seconds: float) -> float:
    """New 4 KiB files created, written and fsynced per second by ``writers`` threads."""
    directory.mkdir(parents=True, exist_ok=True)
    block = os.urandom(SMALL)
    counts = [0] * writers
    deadline = time.monotonic() + seconds

    def writer(n: int) -> None:
        while time.monotonic() < deadline:
            path = directory / f"{n}-{counts[n]}"
            fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
            try:
                os.write(fd, block)
                os.fsync(fd)
            finally:
                os.close(fd)
            counts[n] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    shutil.rmtree(directory)
    return sum(counts) / elapsed


def filesystem_type(path: Path) -> str:
    """The type of the filesystem ``path`` is on (``findmnt``)."""
    done = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE", "--target", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "?"


# ---------------------------------------------------------- client processes


@dataclass(frozen=True)
class S3Peer:
    """An S3 endpoint (the Ceph RGW): where the peer's objects go."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str
    bucket: str
    prefix: str

    def client(self) -> S3Client:
        """A plain boto3 client set up as our S3 backend's (path style, checksums when needed)."""
        import boto3  # noqa: PLC0415 - only where the peer is measured
        from botocore.config import Config  # noqa: PLC0415

        config = Config(
            region_name=self.region,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=config,
        )

    def connect(self, stack: ExitStack) -> Callable[[str, SmallFile], None]:
        """One boto3 client; a call is one PutObject."""
        client = self.client()
        stack.callback(client.close)

        def put(name: str, f: SmallFile) -> None:
            client.put_object(Bucket=self.bucket, Key=f"{self.prefix}{name}", Body=f.data)

        return put


# ----------------------------------------------------------------- the RGW


def answers(url: str) -> bool:
    """Whether an HTTP server answers at ``url`` (any status)."""
    try:
        httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return False
    return True


@dataclass
class Rgw:
    """The peer endpoint, if any, and whether this run started it (and so stops it)."""

    peer: S3Peer | None
    note: str
    stop_script: Path | None = None
    created_bucket: bool = False


def find_rgw(args: argparse.Namespace, prefix: str) -> Rgw:
    """The RGW to compare with: the one named, one already running, or one started here."""
    endpoint = args.s3_endpoint or os.environ.get("S3_ENDPOINT_URL")
    env = dict(os.environ)
    stop_script: Path | None = None
    if endpoint:
        if not answers(endpoint):
            return Rgw(None, f"{endpoint} does not answer")
        note = f"{endpoint} (given)"
    else:
        start = args.rgw_dir / "start"
        if args.no_rgw_start or not start.exists() or os.geteuid() != 0:
            return Rgw(None, "no --s3-endpoint/S3_ENDPOINT_URL and no RGW to start here")
        port = os.environ.get("CEPH_RGW_PORT", "7480")
        running = answers(f"http://127.0.0.1:{port}/")
        print(f"{'using' if running else 'starting'} the Ceph RGW ({start}) ...", flush=True)
        done = subprocess.run([str(start)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-3:]
            return Rgw(None, f"{start} failed ({done.returncode}): {' | '.join(tail)}")
        for line in done.stdout.splitlines():
            key, _, value = line.partition("=")
            env[key] = value
        endpoint = env["S3_ENDPOINT_URL"]
        note = f"{endpoint} ({'already running' if running else 'started by this run'})"
        stop_script = None if running else args.rgw_dir / "stop"
    try:
        peer = S3Peer(
            endpoint,
            env[args.s3_key_env],
            env[args.s3_secret_env],
            env.get("S3_REGION", "us-east-1"),
            args.s3_bucket,
            prefix,
        )
    except KeyError as exc:
        return Rgw(None, f"{endpoint}: no key in ${exc.args[0]}", stop_script)
    rgw = Rgw(peer, note, stop_script)
    client = peer.client()
    try:
        client.head_bucket(Bucket=peer.bucket)
    except client.exceptions.ClientError:
        client.create_bucket(Bucket=peer.bucket)
        rgw.created_bucket = True
    return rgw


def clean_rgw(rgw: Rgw) -> None:
    """Delete this run's objects (and its bucket if it made it); stop the RGW if it started it."""
    if rgw.peer is not None and rgw.stop_script is None:
        client = rgw.peer.client()
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=rgw.peer.bucket, Prefix=rgw.peer.prefix
        )
        for page in pages:
            keys: list[ObjectIdentifierTypeDef] = [
                {"Key": o["Key"]} for o in page.get("Contents", [])
            ]
            if keys:
                client.delete_objects(Bucket=rgw.peer.bucket, Delete={"Objects": keys})
        if rgw.created_bucket:
            client.delete_bucket(Bucket=rgw.peer.bucket)
    if rgw.stop_script is not None:
        subprocess.run([str(rgw.stop_script)], capture_output=True, check=False)


def count_objects(peer: S3Peer, prefix: str) -> int:
    """Objects under ``prefix`` in the peer's bucket."""
    client = peer.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=peer.bucket, Prefix=prefix)
    return sum(page.get("KeyCount", 0) for page in pages)


# ---------------------------------------------------------------- the tree


def write_tree(root: Path, files: int, per_dir: int = 100) -> None:
    """``files`` files of 4 KiB distinct random bytes, ``per_dir`` to a subdirectory."""
    for i in range(files):
        sub = root / f"d{i // per_dir:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:05d}.bin").write_bytes(os.urandom(SMALL))


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Run ``command``; (wall-clock seconds, its stderr's last line). Raises if it fails."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed ({done.returncode}): {done.stderr[-2000:]}")
    lines = done.stderr.strip().splitlines()
    return elapsed, lines[-1] if lines else ""


def aws_env(peer: S3Peer, work: Path) -> dict[str, str]:
    """The aws CLI's environment: the peer's keys, no profile or config of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {
        **env,
        "AWS_ACCESS_KEY_ID": peer.access_key,
        "AWS_SECRET_ACCESS_KEY": peer.secret_key,
        "AWS_DEFAULT_REGION": peer.region,
        "AWS_CONFIG_FILE": str(work / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(work / "aws-credentials"),
    }


# --------------------------------------------------------------------- main


@dataclass
class Results:
    """Every figure of a run, filled in as it goes."""

    cores: int = 0
    load_start: str = ""
    fs_type: str = ""
    fsync_one: float = 0.0
    fsync_many: float = 0.0
    post_path: str = ""
    ours: Rate | None = None
    peer: Rate | None = None
    peer_note: str = ""
    cli_s: float = 0.0
    cli_summary: str = ""
    cli_files: int = 0
    aws_s: float = 0.0
    aws_files: int = 0
    aws_start_s: float = 0.0
    rss: RssSampler | None = None


def run(args: argparse.Namespace, work: Path, res: Results, stack: ExitStack) -> None:  # noqa: PLR0915 - one linear run
    """Every measurement, in order; cleanup is registered on ``stack``."""
    data_dir = work / "data"
    data_dir.mkdir()
    res.fs_type = filesystem_type(data_dir)
    print("fsync limit ...", flush=True)
    res.fsync_one = fsyncs_per_second(data_dir / "fsync", 1, args.fsync_seconds)
    res.fsync_many = fsyncs_per_second(data_dir / "fsync", args.clients, args.fsync_seconds)
    compile_installed()

    rgw = find_rgw(args, f"bench-publish-{uuid.uuid4().hex[:12]}/")
    stack.callback(clean_rgw, rgw)
    res.peer_note = rgw.note

    env = server_env()
    log = stack.enter_context((work / "server.log").open("wb"))
    print("starting the server ...", flush=True)
    server, api, _ = start_server(data_dir, env, log=log)
    stack.callback(stop_process, server, 60)
    sampler = RssSampler(server.pid)
    sampler.start()
    stack.callback(sampler.stop)
    res.rss = sampler
    wait_http(f"{api}/healthz", server)
    sampler.phase = "idle"
    time.sleep(1.0)
    token = (data_dir / "admin-token").read_text(encoding="ascii").strip()

    one_request = not args.session and probe_post_blobs(api, token)
    res.post_path = "POST /v1/blobs" if one_request else "upload session"
    print(f"{args.publishes:,} small publishes, {res.post_path} ...", flush=True)
    sampler.phase = "publish"
    res.ours = run_clients(
        RestTarget(api, token, one_request), args.publishes, args.clients, args.warmup
    )
    sampler.phase = "between"
    if rgw.peer is not None:
        print(f"{args.publishes:,} PutObjects to the RGW ...", flush=True)
        res.peer = run_clients(rgw.peer, args.publishes, args.clients, args.warmup)

    print(f"a tree of {args.files:,} files ...", flush=True)
    tree = work / "tree"
    write_tree(tree, args.files)
    cli_env = {
        **env,
        "ARTIFACTSTORE_DATA_DIR": str(data_dir),
        "XDG_CACHE_HOME": str(work / "cache"),
    }
    sampler.phase = "tree"
    cli = [sys.executable, "-m", "artifactstore.cli"]
    res.cli_s, res.cli_summary = timed(
        [*cli, "upload", "tree", "1.0", str(tree), "--server", api], cli_env
    )
    sampler.phase = "end"
    sampler.sample()
    listed = httpx.get(
        f"{api}/v1/packages/tree/versions/1.0",
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    listed.raise_for_status()
    res.cli_files = len(listed.json()["manifest"]["files"])
    if rgw.peer is not None:
        aws = [args.aws, "--endpoint-url", rgw.peer.endpoint]
        a_env = aws_env(rgw.peer, work)
        timed([*aws, "--version"], a_env)  # a cold pyenv shim, off the clock
        res.aws_start_s, _ = timed([*aws, "--version"], a_env)
        key = f"{rgw.peer.prefix}tree/"
        res.aws_s, _ = timed(
            [*aws, "s3", "cp", "--recursive", "--only-show-errors", str(tree),
             f"s3://{rgw.peer.bucket}/{key}"],
            a_env,
        )  # fmt: skip
        res.aws_files = count_objects(rgw.peer, key)


def report(args: argparse.Namespace, res: Results) -> None:
    """The table."""
    rows: list[tuple[str, str, str]] = [
        ("cores", str(res.cores), f"load average at start {res.load_start}"),
        (
            f"fsync limit, 1 writer ({res.fs_type})",
            f"{res.fsync_one:,.0f} /s",
            "new 4 KiB file: write + fsync, data dir's filesystem",
        ),
        (f"fsync limit, {args.clients} writers", f"{res.fsync_many:,.0f} /s", "threads"),
        (
            "blob path of a publish",
            res.post_path,
            "one request, then PUT manifest"
            if res.post_path == "POST /v1/blobs"
            else (
                f"{'--session' if args.session else 'POST /v1/blobs: 404/405'}:"
                " POST /v1/uploads + PATCH + PUT, then PUT manifest"
            ),
        ),
    ]
    ours, peer = res.ours, res.peer
    if ours is not None:
        rows += [
            (
                f"artifactstore publishes ({args.clients} procs)",
                f"{ours.per_second:,.0f} /s",
                (
                    f"{ours.count:,} in {ours.seconds:.2f} s; "
                    f"{ours.per_second / res.fsync_many:.3f}x fsync limit ({args.clients} writers)"
                ),
            ),
            (
                "  latency p50 / p99",
                f"{ours.p50 * 1000:.1f} ms",
                f"p99 {ours.p99 * 1000:.1f} ms; machine CPU busy {ours.cpu_busy:.0%}",
            ),
        ]
    if peer is not None:
        rows += [
            (
                f"Ceph RGW PutObject ({args.clients} procs)",
                f"{peer.per_second:,.0f} /s",
                f"{peer.count:,} in {peer.seconds:.2f} s; {res.peer_note}",
            ),
            (
                "  latency p50 / p99",
                f"{peer.p50 * 1000:.1f} ms",
                f"p99 {peer.p99 * 1000:.1f} ms; machine CPU busy {peer.cpu_busy:.0%}",
            ),
        ]
        if ours is not None:
            ratio = ours.per_second / peer.per_second
            rows.append(("publishes vs PutObjects", f"{ratio:.2f} x Ceph RGW", ""))
    else:
        rows.append(("Ceph RGW (peer)", "skipped", res.peer_note))
    cli_rate = res.cli_files / res.cli_s if res.cli_s else 0.0
    rows.append(
        (
            f"CLI upload, {args.files:,}-file tree",
            f"{cli_rate:,.0f} files/s",
            f"{res.cli_s:.2f} s wall, {res.cli_files:,} files in the version; {res.cli_summary}",
        )
    )
    if res.aws_s:
        aws_rate = res.aws_files / res.aws_s
        rows += [
            (
                "aws s3 cp --recursive to RGW",
                f"{aws_rate:,.0f} files/s",
                (
                    f"{res.aws_s:.2f} s wall, {res.aws_files:,} objects listed; "
                    f"aws --version {res.aws_start_s:.2f} s"
                ),
            ),
            ("CLI tree vs aws s3 cp", f"{cli_rate / aws_rate:.2f} x aws s3 cp", ""),
        ]
    if res.rss is not None:
        rows += [
            ("server RSS idle (median)", mib(res.rss.median("idle")), ""),
            ("server RSS peak, publishes", mib(res.rss.peak("publish")), ""),
            ("server RSS peak, tree", mib(res.rss.peak("tree")), ""),
            ("server RSS max (50 ms samples)", mib(res.rss.peak()), f"VmHWM {mib(res.rss.hwm)}"),
        ]
    print()
    print(f"Publish benchmark: {args.publishes:,} publishes of {SMALL} B, {args.files:,}-file tree")
    for name, value, note in rows:
        print(f"  {name:<36} {value:>16}   {note}")
    print(f"load average at end: {load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--publishes", type=int, default=1000, help="small publishes (and PUTs)")
    parser.add_argument("--clients", type=int, default=8, help="client processes")
    parser.add_argument("--warmup", type=int, default=8, help="warm-up publishes per client")
    parser.add_argument("--files", type=int, default=2000, help="files in the tree")
    parser.add_argument(
        "--session", action="store_true", help="blobs through upload sessions, not POST /v1/blobs"
    )
    parser.add_argument("--fsync-seconds", type=float, default=2.0, help="each fsync loop's time")
    add_s3_options(parser, "bench-publish")
    parser.add_argument(
        "--rgw-dir", type=Path, default=DEFAULT_RGW_DIR, help="ceph-rgw service (start, stop)"
    )
    parser.add_argument("--no-rgw-start", action="store_true", help="never start an RGW")
    parser.add_argument("--aws", default=DEFAULT_AWS, help="the aws CLI")
    args = parser.parse_args()
    if not Path(args.aws).exists():
        args.aws = shutil.which("aws") or args.aws

    res = Results(cores=os.cpu_count() or 0, load_start=load_average())
    print(f"load average at start: {res.load_start}", flush=True)
    in_work_dir("bench-publish-", lambda work, stack: run(args, work, res, stack))
    report(args, res)


if __name__ == "__main__":
    main()
