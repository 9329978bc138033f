"""The storage backend conformance suite: the contract of ``storage.spi`` as tests.

Every backend's test module subclasses ``BackendConformance`` in a few lines:
it provides a ``backend`` fixture (a fresh, empty backend per test) and the
hooks below, which reach the backend's storage directly, bypassing the
adapter, so the suite can plant the debris of a crashed write, a stray
object, or bytes rewritten behind the registry's back (the shape of zarr's
``zarr.testing.store`` and fsspec's abstract tests; STYLE section 8).

Keys in the hooks are full keys as ``ObjectInfo.key`` reports them (with the
backend's key prefix). Sizes are class attributes, so each backend exercises
its own big-write path (multipart for S3) at a size it can afford.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
from typing import TYPE_CHECKING, ClassVar

import pytest

from artifactstore.digests import Digest, hash_bytes
from artifactstore.errors import BlobNotFoundError, InvalidRangeError, SizeMismatchError
from artifactstore.storage.spi import (
    DEFAULT_READ_CHUNK,
    ByteRange,
    ObjectStream,
    OffsetByteRange,
    SliceByteRange,
    StorageBackend,
    SuffixByteRange,
    object_key,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Sequence
    from pathlib import Path

MIB = 1024 * 1024


def blob(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes (different seeds, different blobs)."""
    return hashlib.shake_256(f"blob-{seed}".encode()).digest(size)


def sha(data: bytes) -> Digest:
    """The sha256 of in-memory bytes."""
    return hash_bytes(data).sha256


async def stream_of(data: bytes, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    """``data`` as an async stream of ``chunk``-sized pieces that yields to other tasks."""
    for i in range(0, len(data), chunk):
        yield data[i : i + chunk]
        await asyncio.sleep(0)


class Boom(Exception):  # noqa: N818 - a test signal, not an error of ours
    """The producer of a stream failed midway."""


async def failing_stream(data: bytes, after: int) -> AsyncIterator[bytes]:
    """Yield ``after`` bytes of ``data`` in 1 MiB pieces, then raise ``Boom``."""
    sent = 0
    while sent < after:
        piece = data[sent : min(after, sent + MIB)]
        sent += len(piece)
        yield piece
        await asyncio.sleep(0)
    raise Boom


def generated_chunks(size: int, seed: int = 7) -> Iterator[bytes]:
    """A ``size``-byte stream of 1 MiB chunks made on the fly (never all in memory)."""
    base = hashlib.shake_256(f"large-{seed}".encode()).digest(MIB)
    index = 0
    remaining = size
    while remaining > 0:
        chunk = index.to_bytes(8, "big") + base[8:]
        chunk = chunk[: min(MIB, remaining)]
        remaining -= len(chunk)
        index += 1
        yield chunk


def generated_sha256(size: int) -> Digest:
    """The sha256 of ``generated_chunks(size)``."""
    h = hashlib.sha256()
    for chunk in generated_chunks(size):
        h.update(chunk)
    return Digest("sha256", h.digest())


async def agenerated(size: int) -> AsyncIterator[bytes]:
    """``generated_chunks`` as an async stream."""
    for chunk in generated_chunks(size):
        yield chunk


# (id, range for an object of n bytes); the expected bytes are resolve_range's slice.
RANGES: list[tuple[str, Callable[[int], ByteRange]]] = [
    ("first-byte", lambda _n: SliceByteRange(0, 1)),
    ("last-byte", lambda n: SliceByteRange(n - 1, n)),
    ("middle", lambda n: SliceByteRange(n // 3, 2 * n // 3)),
    ("whole-as-slice", lambda n: SliceByteRange(0, n)),
    ("end-beyond-object-clamped", lambda n: SliceByteRange(n - 5, n + 1000)),
    ("open-ended", lambda n: OffsetByteRange(n // 2)),
    ("open-ended-last-byte", lambda n: OffsetByteRange(n - 1)),
    ("suffix", lambda _n: SuffixByteRange(10)),
    ("suffix-one", lambda _n: SuffixByteRange(1)),
    ("suffix-larger-than-object", lambda n: SuffixByteRange(n + 100)),
    ("across-chunk-boundaries", lambda _n: SliceByteRange(MIB - 3, 2 * MIB + 3)),
]

BAD_RANGES: list[tuple[str, Callable[[int], ByteRange]]] = [
    ("start-at-end", lambda n: SliceByteRange(n, n + 10)),
    ("start-beyond-end", lambda n: SliceByteRange(n + 10, n + 20)),
    ("offset-at-end", OffsetByteRange),
    ("offset-beyond-end", lambda n: OffsetByteRange(n + 1)),
]

ZERO_LENGTH_RANGES: list[tuple[str, ByteRange]] = [
    ("first-byte", SliceByteRange(0, 1)),
    ("open-ended", OffsetByteRange(0)),
    ("suffix", SuffixByteRange(5)),
]

ROUND_TRIP_SIZES = [0, 1, 1000, MIB - 1, MIB, MIB + 1, 3 * MIB + 12345]


def _ids(cases: Sequence[tuple[str, object]]) -> list[str]:
    return [case[0] for case in cases]


class BackendConformance(abc.ABC):
    """The contract tests. Subclasses provide ``backend`` and the raw-storage hooks."""

    # A size that takes the backend's big-write path (multipart on S3).
    multipart_size: ClassVar[int] = 3 * MIB + 5
    # The generated "multi-GiB-shaped" stream; override with what the backend can afford.
    large_size: ClassVar[int] = 40 * MIB + 3

    # -- hooks: direct access to the backend's storage ---------------------------

    def key_prefix(self, backend: StorageBackend) -> str:
        """The backend's key prefix ("" when it has none)."""
        del backend
        return ""

    @abc.abstractmethod
    async def raw_write(self, backend: StorageBackend, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` directly in the backend's storage."""

    @abc.abstractmethod
    async def raw_read(self, backend: StorageBackend, key: str) -> bytes | None:
        """Read ``key`` directly, or None if absent."""

    @abc.abstractmethod
    async def raw_keys(self, backend: StorageBackend) -> set[str]:
        """Everything in the backend's storage, including debris of unfinished writes."""

    @abc.abstractmethod
    async def crash_write(self, backend: StorageBackend, sha256: Digest, data: bytes) -> None:
        """Leave exactly what a write of ``sha256`` that crashed halfway would leave."""

    # -- helpers ----------------------------------------------------------------

    def key(self, backend: StorageBackend, sha256: Digest) -> str:
        """The full key a blob must be stored under."""
        return object_key(sha256, self.key_prefix(backend))

    async def put(self, backend: StorageBackend, data: bytes) -> Digest:
        """Store ``data`` through the adapter and return its digest."""
        digest = sha(data)
        info = await backend.put_stream(digest, stream_of(data), len(data))
        assert info.sha256 == digest
        assert info.size == len(data)
        assert info.key == self.key(backend, digest)
        return digest

    async def read(self, stream: ObjectStream, bound: int = DEFAULT_READ_CHUNK) -> bytes:
        """Collect a stream, checking that no chunk exceeds ``bound``."""
        parts = []
        async for chunk in stream.chunks:
            assert 0 < len(chunk) <= bound
            parts.append(chunk)
        return b"".join(parts)

    # -- round trips --------------------------------------------------------------

    @pytest.mark.parametrize("size", ROUND_TRIP_SIZES)
    async def test_put_get_round_trip(self, backend: StorageBackend, size: int) -> None:
        """Bytes put as a stream come back identical, with the object's info."""
        data = blob(size, seed=size)
        digest = await self.put(backend, data)
        stream = await backend.get(digest)
        assert stream.info.size == size
        assert stream.range.is_whole
        assert await self.read(stream) == data
        assert await self.raw_read(backend, self.key(backend, digest)) == data

    async def test_multipart_sized_round_trip(self, backend: StorageBackend) -> None:
        """A blob big enough for the backend's big-write path round-trips."""
        data = blob(self.multipart_size, seed=1)
        digest = await self.put(backend, data)
        assert await self.read(await backend.get(digest)) == data
        head = await backend.head(digest)
        assert head is not None
        assert head.size == len(data)

    async def test_large_generated_stream(self, backend: StorageBackend) -> None:
        """A large stream, generated on the fly, is stored and reads back with the same sha256."""
        size = self.large_size
        digest = await asyncio.to_thread(generated_sha256, size)
        info = await backend.put_stream(digest, agenerated(size), size)
        assert info.size == size
        stream = await backend.get(digest)
        h = hashlib.sha256()
        total = 0
        async for chunk in stream.chunks:
            assert len(chunk) <= DEFAULT_READ_CHUNK
            total += len(chunk)
            await asyncio.to_thread(h.update, chunk)
        assert total == size
        assert h.digest() == digest.raw
        assert await backend.delete(digest)

    async def test_reads_stream_in_bounded_chunks(self, backend: StorageBackend) -> None:
        """A multi-MiB read arrives as several chunks, none above 1 MiB."""
        data = blob(3 * MIB + 1, seed=3)
        digest = await self.put(backend, data)
        stream = await backend.get(digest)
        chunks = [chunk async for chunk in stream.chunks]
        assert len(chunks) >= 4
        assert all(len(c) <= DEFAULT_READ_CHUNK for c in chunks)
        assert b"".join(chunks) == data

    async def test_early_close_releases_the_read(self, backend: StorageBackend) -> None:
        """A read closed after one chunk, or before any, releases the blob for deletion."""
        data = blob(3 * MIB, seed=4)
        digest = await self.put(backend, data)
        stream = await backend.get(digest)
        first = await anext(stream.chunks)
        assert first == data[: len(first)]
        await stream.aclose()
        await stream.aclose()
        untouched = await backend.get(digest, SliceByteRange(0, 10))
        await untouched.aclose()
        assert await backend.delete(digest)

    # -- ranges -------------------------------------------------------------------

    @pytest.mark.parametrize(("case", "make_range"), RANGES, ids=_ids(RANGES))
    async def test_range(
        self, backend: StorageBackend, case: str, make_range: Callable[[int], ByteRange]
    ) -> None:
        """A satisfiable range yields exactly the bytes RFC 9110 selects, with its bounds."""
        del case
        data = blob(2 * MIB + 777, seed=5)
        digest = await self.put(backend, data)
        n = len(data)
        byte_range = make_range(n)
        stream = await backend.get(digest, byte_range)
        expected_start, expected_end = _expected_bounds(byte_range, n)
        assert (stream.range.start, stream.range.end, stream.range.size) == (
            expected_start,
            expected_end,
            n,
        )
        assert stream.info.size == n
        assert await self.read(stream) == data[expected_start:expected_end]

    @pytest.mark.parametrize(("case", "make_range"), BAD_RANGES, ids=_ids(BAD_RANGES))
    async def test_unsatisfiable_range(
        self, backend: StorageBackend, case: str, make_range: Callable[[int], ByteRange]
    ) -> None:
        """A range starting at or past the end raises InvalidRangeError carrying the size."""
        del case
        data = blob(1000, seed=6)
        digest = await self.put(backend, data)
        with pytest.raises(InvalidRangeError) as info:
            await backend.get(digest, make_range(len(data)))
        assert info.value.detail["size"] == len(data)

    @pytest.mark.parametrize(
        ("case", "byte_range"), ZERO_LENGTH_RANGES, ids=_ids(ZERO_LENGTH_RANGES)
    )
    async def test_zero_length_object_ranges(
        self, backend: StorageBackend, case: str, byte_range: ByteRange
    ) -> None:
        """Every range of an empty object is unsatisfiable; the whole read is empty."""
        del case
        digest = await self.put(backend, b"")
        with pytest.raises(InvalidRangeError):
            await backend.get(digest, byte_range)
        assert await self.read(await backend.get(digest)) == b""

    # -- absence and delete ----------------------------------------------------------

    async def test_missing_object(self, backend: StorageBackend) -> None:
        """An absent blob: get raises BlobNotFoundError (even with a range), head is None."""
        digest = sha(b"never stored")
        with pytest.raises(BlobNotFoundError):
            await backend.get(digest)
        with pytest.raises(BlobNotFoundError):
            await backend.get(digest, SliceByteRange(0, 1))
        assert await backend.head(digest) is None
        assert await backend.delete(digest) is False

    async def test_delete_is_idempotent(self, backend: StorageBackend) -> None:
        """Delete removes the object once, then reports False; the blob is gone everywhere."""
        data = blob(5000, seed=8)
        digest = await self.put(backend, data)
        assert await backend.delete(digest) is True
        assert await backend.delete(digest) is False
        assert await backend.head(digest) is None
        with pytest.raises(BlobNotFoundError):
            await backend.get(digest)
        assert [i async for i in backend.iter_objects()] == []
        assert await self.raw_read(backend, self.key(backend, digest)) is None

    async def test_put_again_is_idempotent(self, backend: StorageBackend) -> None:
        """Putting a stored blob again succeeds and leaves one identical object."""
        data = blob(2 * MIB, seed=9)
        digest = await self.put(backend, data)
        await self.put(backend, data)
        assert await self.read(await backend.get(digest)) == data
        assert [i.sha256 async for i in backend.iter_objects()] == [digest]

    # -- concurrency -------------------------------------------------------------------

    async def test_concurrent_puts_of_one_blob(self, backend: StorageBackend) -> None:
        """Eight concurrent puts of the same blob end with one complete object and no debris."""
        data = blob(MIB + 4321, seed=10)
        digest = sha(data)
        results = await asyncio.gather(
            *(backend.put_stream(digest, stream_of(data), len(data)) for _ in range(8))
        )
        assert {r.size for r in results} == {len(data)}
        assert await self.read(await backend.get(digest)) == data
        assert await self.raw_keys(backend) == {self.key(backend, digest)}

    async def test_concurrent_puts_of_different_blobs(self, backend: StorageBackend) -> None:
        """Concurrent puts of different blobs all land, each intact."""
        datas = [blob(300_000 + i, seed=100 + i) for i in range(6)]
        digests = await asyncio.gather(*(self.put(backend, d) for d in datas))
        for digest, data in zip(digests, datas, strict=True):
            assert await self.read(await backend.get(digest)) == data

    # -- failed writes leave nothing --------------------------------------------------------

    @pytest.mark.parametrize("delta", [-1, 1, -1000])
    @pytest.mark.parametrize("path", ["small", "multipart"])
    async def test_size_mismatch_stores_nothing(
        self, backend: StorageBackend, delta: int, path: str
    ) -> None:
        """A stream shorter or longer than declared raises SizeMismatchError and leaves nothing."""
        size = 10_000 if path == "small" else self.multipart_size
        data = blob(size, seed=11)
        digest = sha(data)
        declared = size + delta
        before = await self.raw_keys(backend)
        with pytest.raises(SizeMismatchError):
            await backend.put_stream(digest, stream_of(data), declared)
        assert await backend.head(digest) is None
        assert await self.raw_keys(backend) == before

    @pytest.mark.parametrize("path", ["small", "multipart"])
    async def test_failing_stream_stores_nothing(self, backend: StorageBackend, path: str) -> None:
        """A stream that raises midway propagates its error and leaves nothing visible."""
        size = 100_000 if path == "small" else self.multipart_size
        data = blob(size, seed=12)
        digest = sha(data)
        before = await self.raw_keys(backend)
        with pytest.raises(Boom):
            await backend.put_stream(digest, failing_stream(data, after=size * 9 // 10), size)
        assert await backend.head(digest) is None
        with pytest.raises(BlobNotFoundError):
            await backend.get(digest)
        assert await self.raw_keys(backend) == before

    async def test_crashed_write_leftovers_are_ignored(self, backend: StorageBackend) -> None:
        """Debris of a crashed write is invisible to head, get and iteration; a new put succeeds."""
        data = blob(MIB + 10, seed=13)
        digest = sha(data)
        await self.crash_write(backend, digest, data)
        assert await backend.head(digest) is None
        with pytest.raises(BlobNotFoundError):
            await backend.get(digest)
        assert [i async for i in backend.iter_objects()] == []
        await self.put(backend, data)
        assert await self.read(await backend.get(digest)) == data
        assert [i.sha256 async for i in backend.iter_objects()] == [digest]

    # -- behind the registry's back -----------------------------------------------------------

    async def test_stray_objects_are_not_listed(self, backend: StorageBackend) -> None:
        """Iteration yields well-formed keys only, ignoring strays planted directly."""
        digest = await self.put(backend, blob(100, seed=14))
        h = digest.hex
        prefix = self.key_prefix(backend)
        p = f"{prefix}/" if prefix else ""
        strays = [
            f"{p}README",
            f"{p}sha256/{h[:2]}/{h[2:4]}/not-a-digest",
            f"{p}sha256/{h[:2]}/{h[2:4]}/{h.upper()}",
            f"{p}sha256/00/00/{h}",  # a real digest in the wrong directory
            f"{p}sha256/{h[:2]}/{h[2:4]}/{h}.bak",
            f"{p}sha512/{h[:2]}/{h[2:4]}/{h}",
        ]
        for key in strays:
            await self.raw_write(backend, key, b"stray")
        listed = [i async for i in backend.iter_objects()]
        assert [(i.sha256, i.size, i.key) for i in listed] == [
            (digest, 100, self.key(backend, digest))
        ]

    async def test_object_rewritten_behind_the_back(self, backend: StorageBackend) -> None:
        """The backend serves what is stored (verify catches it) and a new put repairs it."""
        data = blob(4000, seed=15)
        digest = await self.put(backend, data)
        await self.raw_write(backend, self.key(backend, digest), b"corrupted")
        head = await backend.head(digest)
        assert head is not None
        assert head.size == len(b"corrupted")
        assert await self.read(await backend.get(digest)) == b"corrupted"
        await self.put(backend, data)
        assert await self.read(await backend.get(digest)) == data

    async def test_object_planted_directly_is_served(self, backend: StorageBackend) -> None:
        """A well-formed object written directly is found by head, get and iteration."""
        data = blob(777, seed=16)
        digest = sha(data)
        await self.raw_write(backend, self.key(backend, digest), data)
        head = await backend.head(digest)
        assert head is not None
        assert head.size == 777
        assert await self.read(await backend.get(digest)) == data
        assert [i.sha256 async for i in backend.iter_objects()] == [digest]

    # -- inventory and health ------------------------------------------------------------------

    async def test_iteration_is_complete_and_exact(self, backend: StorageBackend) -> None:
        """Iteration lists every stored blob exactly once with its size and key."""
        datas = [blob(n, seed=200 + n) for n in (0, 1, 999, 65_536, MIB + 1)]
        digests = [await self.put(backend, d) for d in datas]
        await backend.delete(digests[2])
        expected = {
            (d, len(data), self.key(backend, d))
            for d, data in zip(digests, datas, strict=True)
            if d != digests[2]
        }
        listed = [(i.sha256, i.size, i.key) async for i in backend.iter_objects()]
        assert len(listed) == len(expected)
        assert set(listed) == expected

    async def test_health_ok(self, backend: StorageBackend) -> None:
        """A reachable, writable backend reports healthy and leaves no probe behind."""
        before = await self.raw_keys(backend)
        health = await backend.health()
        assert health.ok, health.detail
        assert await self.raw_keys(backend) == before

    async def test_name_and_kind(self, backend: StorageBackend) -> None:
        """The backend reports its configured name and one of the three kinds."""
        assert backend.name
        assert backend.kind in {"local", "postgres", "s3"}
        assert isinstance(backend, StorageBackend)

    # -- staged files ----------------------------------------------------------------------------

    @pytest.mark.parametrize("consume", [False, True])
    @pytest.mark.parametrize("path", ["small", "multipart"])
    async def test_put_file(
        self, backend: StorageBackend, tmp_path: Path, consume: bool, path: str
    ) -> None:
        """A staged file is stored intact; without consume it is left untouched."""
        data = blob(10_001 if path == "small" else self.multipart_size, seed=17)
        staged = tmp_path / "staged"
        staged.write_bytes(data)
        digest = sha(data)
        info = await backend.put_file(digest, staged, consume=consume)
        assert (info.sha256, info.size, info.key) == (digest, len(data), self.key(backend, digest))
        assert await self.read(await backend.get(digest)) == data
        if not consume:
            assert staged.read_bytes() == data
        assert await self.raw_keys(backend) == {self.key(backend, digest)}


def _expected_bounds(byte_range: ByteRange, n: int) -> tuple[int, int]:
    """The RFC 9110 selection, written out independently of ``resolve_range``."""
    if isinstance(byte_range, SliceByteRange):
        return byte_range.start, min(byte_range.end, n)
    if isinstance(byte_range, OffsetByteRange):
        return byte_range.offset, n
    return max(0, n - byte_range.suffix), n
