"""CLI <-> server transfers against this machine's limits and S3 peers, in one run (issue 11).

Measured in one run, on one machine, against the real ``artifactstore serve``
(a subprocess on free ports, embedded PostgreSQL and the ``local`` backend in
a temporary data dir under /tmp, one S3 gateway credential) and the installed
``artifactstore`` command, wall clock of each whole process (start-up
included; the installed modules are compiled to bytecode first, as any
installed program's are after its first run):

1. Limits, per size (``--sizes 1,4`` in GiB, default 1; ``--gib X`` for one
   size; items 1-3 run once per size): single-thread hashlib sha256 of the file (1 MiB reads,
   the file in the page cache); ``cp`` + ``sync -f`` of the copy, ``--reps``
   times (min / median; ratios use the median), and once from an evicted
   source for reference.
2. Upload of a fresh file, handed over (the default: the server reads the
   client's file through ``<data_dir>/handoff.sock``), then of another fresh
   file with ``--no-handoff`` (over loopback HTTP, as from another machine).
   Targets: >= 0.55x and >= 0.35x the sha256 rate.
3. Download of the first file, the stored blob evicted from the page cache
   before every read (uploads write it around the cache, so each reader
   starts as the first would): handed over (default; target >= 0.8x
   cp+sync) and over HTTP (target >= 0.5x cp+sync and >= 1.2x the aws CLI);
   ``aws s3 cp s3://big/<version>/<file>`` from the server's S3 gateway, and
   ``curl -o`` of ``/v1/blobs/sha256:<hex>``, each followed by ``sync -f``
   of its output, as the CLI fsyncs its own.
4. A tree of ``--files`` 4 KiB random files: its upload (reference), its
   download handed over (target >= 1.0x aws) and over HTTP, and ``aws s3 cp
   --recursive s3://tree/1.0/`` followed by ``sync -f`` (no eviction: small
   blobs stay cached, the same for every reader). The gateway is read-only,
   so aws has no upload to compare.
5. ``artifactstore --help`` ``--startup-runs`` times after one warm-up,
   median (target <= 0.35 s, the issue's 0.25-0.35 s).
6. The server's RSS (VmRSS every 50 ms, and VmHWM) throughout (issue 3:
   <= 200 MiB); ``--versions N`` adds issue 3's small publishes.

The last column says what the server's access logs show each command moved,
and how (``handoff``: its Unix socket; ``http``: the REST API; ``s3``: the
gateway): a client that asked for the handoff and fell back to HTTP shows
``http``. Every downloaded file is compared with its source by sha256; a
mismatch is printed and makes the script exit 1 after the table. Timing
never does.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from _common import (
    GIB,
    MIB,
    RssSampler,
    compile_installed,
    gateway_config,
    load_average,
    percentile,
    server_env,
    sha256_file,
    small_files,
    start_server,
    stop_process,
    wait_http,
    write_random_file,
)
from _transfer import (
    GW_ACCESS_KEY,
    GW_SECRET_KEY,
    SMALL,
    WARMUP_PUBLISHES,
    WORKERS,
    Row,
    aws_env,
    cp_sync_times,
    evict,
    make_tree,
    print_table,
    publish_many,
    rate_mb,
    rss_rows,
    run,
    run_synced,
    served,
    spread,
    stored_blob,
    timed_row,
    tool,
    tree_digests,
)

if TYPE_CHECKING:
    import subprocess

RSS_TARGET = 200 * MIB
STARTUP_TARGET = 0.35


class Bench:
    """One run's server, commands and findings; each method measures one part and adds rows."""

    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work, self.args = work, args
        self.data_dir = work / "data"
        self.env = server_env()
        self.rows: list[Row] = []
        self.wrong: list[str] = []
        self.cli = tool("artifactstore") or sys.exit("the artifactstore command is not installed")
        self.aws, self.curl = tool("aws"), tool("curl")
        self.aws_env = aws_env(self.env, work / "home")
        self.server: subprocess.Popen[bytes] | None = None
        self.sampler: RssSampler | None = None
        self.api = self.gw = self.token = ""
        self.cli_env: dict[str, str] = {}
        self.log = work / "server.log"
        self.saw = ""  # what the server's access log showed of the last command

    def start(self) -> None:
        """Start the server with one gateway credential; sample its RSS from the start."""
        with self.log.open("wb") as out:
            started = time.perf_counter()
            self.server, self.api, self.gw = start_server(
                self.data_dir,
                self.env,
                config=gateway_config(self.work, GW_ACCESS_KEY, GW_SECRET_KEY, anonymous=False),
                log=out,
            )
        self.sampler = RssSampler(self.server.pid)
        self.sampler.start()
        wait_http(f"{self.api}/healthz", self.server)
        wait_http(f"{self.gw}/", self.server, any_status=True)
        self.rows.append(Row("server start-up to /healthz", f"{time.perf_counter() - started:.1f}"))
        self.phase("idle")
        time.sleep(1.0)
        self.token = (self.data_dir / "admin-token").read_text(encoding="ascii").strip()
        self.cli_env = {
            **self.env,
            "ARTIFACTSTORE_DATA_DIR": str(self.data_dir),
            "ARTIFACTSTORE_SERVER": self.api,
            "XDG_CACHE_HOME": str(self.work / "cache"),
        }

    def stop(self) -> None:
        """Stop the server and the sampler (safe to call twice)."""
        stop_process(self.server, timeout=60)
        if self.sampler is not None:
            self.sampler.stop()

    def phase(self, name: str) -> None:
        """Label the RSS samples from now on."""
        if self.sampler is not None:
            self.sampler.phase = name

    def watched(self, args: list[str], env: dict[str, str] | None, synced: Path | None) -> float:
        """Seconds of one command (then ``sync -f synced``); ``saw`` says what the server moved."""
        offset = self.log.stat().st_size
        took = run(args, env) if synced is None else run_synced(args, env, synced)
        time.sleep(0.2)  # the server logs a request after its last byte is sent
        self.saw = served(self.log, offset)
        return took

    def artifactstore(self, *args: str) -> float:
        """Seconds of one ``artifactstore`` command that talks to the server."""
        return self.watched([self.cli, *args], self.cli_env, None)

    def timed(
        self,
        what: str,
        size: int,
        seconds: float,
        versus: tuple[str, float] | None,
        target: float | None,
        *,
        files: int = 0,
    ) -> None:
        """Add a timed row for the last command (``timed_row``, what the server saw)."""
        self.rows.append(timed_row(what, size, seconds, versus, target, path=self.saw, files=files))

    def check(self, what: str, ok: bool) -> None:
        """Record a byte check; a failed one is kept for the end of the run."""
        if not ok:
            self.wrong.append(what)
            print(f"  WRONG BYTES: {what}", flush=True)

    def startup(self) -> None:
        """``artifactstore --help``: one warm-up, then the median of the runs."""
        run([self.cli, "--help"], self.cli_env)
        times = [run([self.cli, "--help"], self.cli_env) for _ in range(self.args.startup_runs)]
        median = statistics.median(times)
        self.rows.append(
            Row(
                f"CLI start-up: artifactstore --help (median of {len(times)})",
                f"{median:.3f}",
                ratio=f"min {min(times):.3f}, max {max(times):.3f}",
                target=f"<= {STARTUP_TARGET:.2f} s",
                met="yes" if median <= STARTUP_TARGET else "NO",
            )
        )

    def big(self, gib: float) -> None:  # noqa: PLR0915 - one size's measurements, in order
        """Limits, uploads and downloads of one size, every download checked byte-exact."""
        size, version, add = int(gib * GIB), f"{gib:g}", self.rows.append
        label = f"{gib:g} GiB"
        source = self.work / f"big-{version}.bin"
        print(f"{label}: generating, sha256, cp + sync ...", flush=True)
        write_random_file(source, size)
        sha, sha_rate = sha256_file(source)
        sha_s = size / sha_rate
        cp = cp_sync_times(source, self.args.reps)
        cp_cold = cp_sync_times(source, 1, cold=True)[0]
        cp_s = statistics.median(cp)
        add(Row(f"{label}: sha256 (hashlib, 1 thread)", f"{sha_s:.2f}", rate_mb(size, sha_s)))
        best = f"min: {rate_mb(size, min(cp))}"
        add(Row(f"{label}: cp + sync -f (min / median)", spread(cp), rate_mb(size, cp_s), best))
        add(timed_row(f"{label}: cp + sync -f, source evicted", size, cp_cold, None, None))
        sha_ref, cp_ref = ("sha256", sha_s), ("cp+sync", cp_s)

        print(f"{label}: uploads ...", flush=True)
        self.phase(f"{label}: upload, default")
        up = self.artifactstore("upload", "big", version, str(source))
        self.timed(f"{label}: upload, default (handoff)", size, up, sha_ref, 0.55)
        fresh = self.work / f"big-http-{version}.bin"
        self.phase("between")
        write_random_file(fresh, size)
        self.phase(f"{label}: upload, --no-handoff")
        up_http = self.artifactstore("upload", "big-http", version, str(fresh), "--no-handoff")
        self.timed(f"{label}: upload, --no-handoff", size, up_http, sha_ref, 0.35)
        fresh.unlink()

        print(f"{label}: downloads ...", flush=True)
        blob = stored_blob(self.data_dir, sha)
        out = self.work / "out"
        target = out / source.name

        def check(what: str) -> None:
            got, _ = sha256_file(target)
            self.check(f"{label}: {what}", got == sha and target.stat().st_size == size)
            shutil.rmtree(out, ignore_errors=True)

        def download(*extra: str) -> float:
            evict(blob)
            took = self.artifactstore("download", "big", version, "--output", str(out), *extra)
            check(f"download {' '.join(extra)}")
            return took

        self.phase(f"{label}: download, default")
        down = download()
        self.timed(f"{label}: download, default (handoff)", size, down, cp_ref, 0.8)
        self.phase(f"{label}: download, --no-handoff")
        down_http = download("--no-handoff")
        http_saw = self.saw
        self.timed(f"{label}: download, --no-handoff", size, down_http, cp_ref, 0.5)

        def peer(what: str, command: list[str] | None, env: dict[str, str] | None) -> float:
            """A peer's download of the same blob, then ``sync -f``; NaN if it is not installed."""
            if command is None:
                add(Row(f"{label}: {what}", ratio="skipped: not installed"))
                return float("nan")
            out.mkdir()
            evict(blob)
            took = self.watched(command, env, target)
            check(what)
            self.timed(f"{label}: {what} + sync -f", size, took, cp_ref, None)
            return took

        self.phase(f"{label}: aws s3 cp, curl")
        key = f"s3://big/{version}/{source.name}"
        aws = None
        if self.aws is not None:
            aws = [self.aws, "--endpoint-url", self.gw, "s3", "cp", "--only-show-errors"]
            aws += [key, str(target)]
        aws_s = peer("aws s3 cp", aws, self.aws_env)
        if not math.isnan(aws_s):
            what = f"{label}: download, --no-handoff vs aws"
            add(timed_row(what, size, down_http, ("aws", aws_s), 1.2, path=http_saw))
        curl = None
        if self.curl is not None:
            auth = f"Authorization: Bearer {self.token}"
            curl = [self.curl, "-sS", "--fail", "--noproxy", "*", "-H", auth, "-o", str(target)]
            curl.append(f"{self.api}/v1/blobs/sha256:{sha}")
        peer("curl -o /v1/blobs", curl, None)
        source.unlink()
        self.phase("between")

    def tree(self, count: int) -> None:
        """Upload, then download a tree of small files three ways, each checked byte-exact."""
        label, add = f"tree {count:,} x 4 KiB", self.rows.append
        size = count * SMALL
        root = self.work / "src" / "tree"
        print(f"{label}: generating, uploading ...", flush=True)
        expected = make_tree(root, count, SMALL)
        self.phase("tree upload")
        up = self.artifactstore("upload", "tree", "1.0", str(root))
        self.timed(f"{label}: upload, default (handoff)", size, up, None, None, files=count)
        out = self.work / "out"
        more = ["--concurrency", str(self.args.concurrency)] if self.args.concurrency else []

        def check(what: str) -> None:
            self.check(f"{label}: {what}", tree_digests(out) == expected)
            shutil.rmtree(out, ignore_errors=True)

        print(f"{label}: downloads ...", flush=True)
        self.phase("tree downloads")
        downloads: list[tuple[str, float, str, float | None]] = []
        for name, extra, goal in (
            ("default (handoff)", [], 1.0),
            ("--no-handoff", ["--no-handoff"], None),
        ):
            took = self.artifactstore(
                "download", "tree", "1.0", "--output", str(out), *more, *extra
            )
            check(f"download {name}")
            downloads.append((name, took, self.saw, goal))
        what = f"{label}: aws s3 cp --recursive + sync -f"
        aws: tuple[str, float] | None = None
        if self.aws is None:
            add(Row(what, ratio="skipped: aws is not installed"))
        else:
            cmd = [self.aws, "--endpoint-url", self.gw, "s3", "cp", "--recursive"]
            cmd += ["--only-show-errors", "s3://tree/1.0/", str(out)]
            aws_s = self.watched(cmd, self.aws_env, out)
            check("aws s3 cp --recursive")
            self.timed(what, size, aws_s, None, None, files=count)
            aws = ("aws", aws_s)
        for name, took, saw, goal in downloads:
            row = timed_row(
                f"{label}: download, {name}", size, took, aws, goal, path=saw, files=count
            )
            add(row)
        self.phase("between")

    def small(self, versions: int) -> None:
        """Issue 3's small publishes (1,000 for its figure): per second and p50 / p95."""
        asyncio.run(
            publish_many(self.api, self.token, "small-warmup", small_files(WARMUP_PUBLISHES))
        )
        self.phase("small publishes")
        took, latencies = asyncio.run(
            publish_many(self.api, self.token, "small", small_files(versions))
        )
        self.rows.append(
            Row(
                f"{versions:,} small publishes, {WORKERS} clients",
                f"{took:.2f}",
                f"{versions / took:,.0f} /s",
                f"p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
                f"p95 {percentile(latencies, 0.95) * 1000:.0f} ms",
            )
        )
        self.phase("between")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1", help="big file sizes in GiB, e.g. 1,4 (default 1)")
    parser.add_argument("--gib", type=float, help="one big file size in GiB (instead of --sizes)")
    parser.add_argument("--reps", type=int, default=5, help="cp + sync repetitions (default 5)")
    parser.add_argument("--files", type=int, default=2000, help="files in the tree (0: no tree)")
    parser.add_argument("--concurrency", type=int, help="--concurrency of the tree downloads")
    parser.add_argument("--startup-runs", type=int, default=7, help="timed --help runs")
    parser.add_argument("--versions", type=int, default=0, help="small publishes (0: skipped)")
    args = parser.parse_args()
    sizes = [args.gib] if args.gib is not None else [float(s) for s in args.sizes.split(",")]

    print(f"load average at start: {load_average()}", flush=True)
    compile_installed()
    work = Path(tempfile.mkdtemp(prefix="bench-transfer-", dir="/tmp"))
    bench = Bench(work, args)
    try:
        print("starting the server ...", flush=True)
        bench.start()
        bench.startup()
        for gib in sizes:
            bench.big(gib)
        if args.files:
            bench.tree(args.files)
        if args.versions:
            print(f"{args.versions:,} small publishes ...", flush=True)
            bench.small(args.versions)
        assert bench.sampler is not None
        bench.phase("end")
        bench.sampler.sample()
    finally:
        bench.stop()
        shutil.rmtree(work, ignore_errors=True)
    assert bench.sampler is not None
    bench.rows += rss_rows(bench.sampler, RSS_TARGET)
    print_table(f"Transfer benchmark (issue 11), {os.cpu_count()} cores", bench.rows)
    print(f"load average at end: {load_average()}")
    if bench.wrong:
        print(f"WRONG BYTES in {len(bench.wrong)} downloads: {'; '.join(bench.wrong)}")
        sys.exit(1)
    print("every download was byte-exact (sha256 of each file against its source)")


if __name__ == "__main__":
    main()
