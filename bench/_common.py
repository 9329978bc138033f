"""Shared helpers for the benchmarks: generated streams, rates, memory."""

from __future__ import annotations

import hashlib
import os
import resource
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

MIB = 1024 * 1024
GIB = 1024 * MIB


def generated_chunks(total: int, chunk: int = MIB, seed: int = 1) -> Iterator[bytes]:
    """``total`` bytes in ``chunk``-sized pieces, generated (never held whole).

    One random block is reused with a per-chunk counter stamped in, so no two
    chunks are equal and generation costs almost nothing next to hashing.
    """
    block = bytearray(os.urandom(chunk))
    block[:8] = seed.to_bytes(8, "big")
    sent = 0
    n = 0
    while sent < total:
        size = min(chunk, total - sent)
        block[8:16] = n.to_bytes(8, "big")
        yield bytes(block[:size])
        sent += size
        n += 1


async def agenerated_chunks(total: int, chunk: int = MIB, seed: int = 1) -> AsyncIterator[bytes]:
    """The async form of ``generated_chunks``."""
    for piece in generated_chunks(total, chunk, seed):
        yield piece


def sha256_rate(total: int) -> float:
    """This machine's single-thread sha256 speed in bytes/s over generated data."""
    h = hashlib.sha256()
    start = time.perf_counter()
    for piece in generated_chunks(total):
        h.update(piece)
    return total / (time.perf_counter() - start)


def rss_bytes() -> int:
    """Current resident set size of this process."""
    pages = int(Path("/proc/self/statm").read_text(encoding="ascii").split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mb(rate: float) -> str:
    """Bytes/s as MB/s (10^6), the unit of docs/PERFORMANCE.md."""
    return f"{rate / 1e6:,.0f} MB/s"
