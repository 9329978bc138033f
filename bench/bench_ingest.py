"""Ingest a generated 2 GiB stream into the local backend through the registry.

Prints the ingest rate beside this machine's sha256 rate (measured here, in
the same run) and the peak RSS growth. Targets (issue 2): ingest >= 0.7x the
sha256 rate; RSS growth <= 64 MiB. The registry runs on the embedded
PostgreSQL in a temporary data dir, exactly as ``artifactstore serve`` would.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from _common import GIB, MIB, agenerated_chunks, mb, peak_rss_bytes, rss_bytes, sha256_rate
from artifactstore.config import Settings
from artifactstore.registry import Registry


async def main(total: int) -> None:
    with tempfile.TemporaryDirectory(prefix="as-bench-") as tmp:
        async with await Registry.open(Settings(data_dir=Path(tmp))) as registry:
            await registry.ingest(agenerated_chunks(8 * MIB, seed=99))  # warm-up
            base = rss_bytes()
            start = time.perf_counter()
            blob = await registry.ingest(agenerated_chunks(total, seed=1))
            elapsed = time.perf_counter() - start
            growth = peak_rss_bytes() - base
    sha = sha256_rate(total)
    rate = total / elapsed
    print(f"ingest of {total / GIB:.1f} GiB into local: {elapsed:.2f} s, {mb(rate)}")
    print(f"sha256 alone, same data, this run:   {mb(sha)}")
    print(f"ratio ingest/sha256:                 {rate / sha:.2f}x (target >= 0.70x)")
    print(f"peak RSS growth during ingest:       {growth / MIB:.1f} MiB (target <= 64 MiB)")
    print(f"blob: {blob.sha256} size {blob.size}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gib", type=float, default=2.0, help="stream size in GiB")
    args = parser.parse_args()
    asyncio.run(main(int(args.gib * GIB)))
