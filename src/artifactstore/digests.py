"""Digests: the two names of every blob, computed in one streaming pass.

A blob is identified by its sha256 and always carries its blake3 (256-bit)
and size (DESIGN section 1). ``DualHasher`` feeds each buffer to both hash
functions exactly once; for large buffers sha256 runs on a worker thread
while blake3 runs on the caller's, since both release the GIL, so the pair
costs about as much as sha256 alone. ``Digest`` is the typed value: parsed
from and formatted as ``sha256:<hex>`` / ``blake3:<hex>``, validated for
length and alphabet, compared in constant time.

This module does no I/O of its own; callers decide where bytes come from.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Self

import blake3

from artifactstore.errors import InvalidDigestError
from artifactstore.resources import shared_pool

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = [
    "DIGEST_BYTES",
    "Algorithm",
    "BlobDigests",
    "Digest",
    "DualHasher",
    "hash_bytes",
]

Algorithm = Literal["sha256", "blake3"]
ALGORITHMS: tuple[Algorithm, ...] = ("sha256", "blake3")
DIGEST_BYTES = 32
_HEX_RE = re.compile(r"[0-9a-f]{64}")

# Below this size the thread hand-off costs more than it saves.
PARALLEL_THRESHOLD_BYTES = 256 * 1024
# Chunks update_stream lets sha256 fall behind (memory: this many chunks).
LANE_DEPTH = 3


@dataclass(frozen=True, slots=True)
class Digest:
    """One 256-bit digest with its algorithm; the text form is ``alg:<64 hex>``."""

    algorithm: Algorithm
    raw: bytes

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise InvalidDigestError(f"unknown digest algorithm {self.algorithm!r}")
        if len(self.raw) != DIGEST_BYTES:
            raise InvalidDigestError(
                f"{self.algorithm} digest must be {DIGEST_BYTES} bytes, got {len(self.raw)}"
            )

    @classmethod
    def parse(cls, text: str, *, algorithm: Algorithm | None = None) -> Self:
        """Parse ``alg:<hex>``; with ``algorithm`` given, a bare hex string is accepted too.

        Raises:
            InvalidDigestError: unknown algorithm, wrong length or non-lowercase-hex.
        """
        alg, sep, hexpart = text.partition(":")
        if not sep:
            if algorithm is None:
                raise InvalidDigestError(f"digest {text[:80]!r} lacks an 'algorithm:' prefix")
            alg, hexpart = algorithm, text
        if alg not in ALGORITHMS:
            raise InvalidDigestError(f"unknown digest algorithm {alg[:20]!r}")
        if algorithm is not None and alg != algorithm:
            raise InvalidDigestError(f"expected a {algorithm} digest, got {alg}")
        return cls.from_hex(alg, hexpart)

    @classmethod
    def from_hex(cls, algorithm: Algorithm, hexpart: str) -> Self:
        """Build from 64 lowercase hex characters; anything else is refused."""
        if not _HEX_RE.fullmatch(hexpart):
            raise InvalidDigestError(
                f"{algorithm} digest must be 64 lowercase hex characters",
                value=hexpart[:80],
            )
        return cls(algorithm, bytes.fromhex(hexpart))

    @property
    def hex(self) -> str:
        """The 64 lowercase hex characters."""
        return self.raw.hex()

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.raw.hex()}"

    def matches(self, other: Digest) -> bool:
        """Constant-time equality, for comparing against a caller's expectation."""
        return self.algorithm == other.algorithm and hmac.compare_digest(self.raw, other.raw)


@dataclass(frozen=True, slots=True)
class BlobDigests:
    """What one pass over a blob yields: both digests and the byte count."""

    sha256: Digest
    blake3: Digest
    size: int

    def __post_init__(self) -> None:
        if self.sha256.algorithm != "sha256" or self.blake3.algorithm != "blake3":
            raise InvalidDigestError("BlobDigests needs a sha256 and a blake3 digest")
        if self.size < 0:
            raise InvalidDigestError("size cannot be negative")


class DualHasher:
    """sha256 and blake3 over the same bytes, each byte hashed once by each.

    Not thread-safe: one stream, one hasher. ``update`` may be called from a
    worker thread (``asyncio.to_thread``) to keep an event loop free.
    """

    __slots__ = ("_blake3", "_lane", "_pending", "_sha256", "_size")

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self._blake3 = blake3.blake3()
        self._size = 0
        self._lane: ThreadPoolExecutor | None = None
        self._pending: deque[Future[None]] = deque()

    @property
    def size(self) -> int:
        """Bytes hashed so far."""
        return self._size

    def update(
        self,
        data: bytes | bytearray | memoryview,
        alongside: Callable[[], object] | None = None,
    ) -> None:
        """Feed ``data`` to both hashes; large buffers hash on two threads at once.

        ``alongside`` (for example writing the same bytes to disk) runs on the
        caller's thread while sha256 runs on the worker, so the slowest of
        the three sets the pace instead of their sum.
        """
        n = len(data)
        if n >= PARALLEL_THRESHOLD_BYTES:
            future = shared_pool("sha256", 4).submit(self._sha256.update, data)
            try:
                self._blake3.update(data)
                if alongside is not None:
                    alongside()
            finally:
                future.result()
        else:
            if n:
                self._sha256.update(data)
                self._blake3.update(data)
            if alongside is not None:
                alongside()
        self._size += n

    def update_stream(self, data: bytes, alongside: Callable[[], object] | None = None) -> None:
        """Like ``update`` for immutable ``bytes``, without waiting for sha256 to finish.

        sha256 of a stream is the slowest of the three jobs; here it runs on a
        private lane (one thread, so in order) up to ``LANE_DEPTH`` chunks
        behind, so it never waits for blake3 or the write of the next chunk
        and runs back to back. Call ``drain`` (or ``result``) before the
        hasher is set aside.
        """
        n = len(data)
        if n < PARALLEL_THRESHOLD_BYTES:
            self.drain()
            self.update(data, alongside)
            return
        if self._lane is None:
            self._lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256-lane")
        while len(self._pending) >= LANE_DEPTH:
            self._pending.popleft().result()
        self._pending.append(self._lane.submit(self._sha256.update, data))
        self._blake3.update(data)
        if alongside is not None:
            alongside()
        self._size += n

    def drain(self) -> None:
        """Wait for queued sha256 work and release the lane's thread."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            if self._lane is not None:
                self._lane.shutdown(wait=True)
                self._lane = None

    def result(self) -> BlobDigests:
        """The digests of everything fed so far (the hasher stays usable)."""
        self.drain()
        return BlobDigests(
            sha256=Digest("sha256", self._sha256.digest()),
            blake3=Digest("blake3", self._blake3.digest()),
            size=self._size,
        )

    def hash_iter(self, chunks: Iterable[bytes]) -> BlobDigests:
        """Feed every chunk and return the result."""
        for chunk in chunks:
            self.update(chunk)
        return self.result()


def hash_bytes(data: bytes) -> BlobDigests:
    """Digests of an in-memory byte string (small data: manifests, tests)."""
    hasher = DualHasher()
    hasher.update(data)
    return hasher.result()
