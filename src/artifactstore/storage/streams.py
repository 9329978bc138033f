"""Stream helpers shared by the storage adapters.

Owns the small pieces every adapter needs to stream bytes with bounded
memory: checking that a stream delivers exactly its declared size
(``exact_size``), regrouping a stream into fixed-size parts (``rechunk``),
reading a byte range of a file on a worker thread (``read_file_range``), and
an async iterator whose release action runs exactly once whether it is
exhausted, fails or is closed before its first chunk (``ClosingChunks``).

It knows nothing of keys, digests or any particular backend, and does no
hashing (DESIGN section 4: backends check sizes, the registry checks digests).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, BinaryIO

from artifactstore.errors import SizeMismatchError
from artifactstore.storage.spi import DEFAULT_READ_CHUNK

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable
    from pathlib import Path

    from artifactstore.staged_file import DirectReader

__all__ = [
    "ClosingChunks",
    "coalesce",
    "exact_size",
    "iter_file",
    "read_direct_range",
    "read_file_range",
    "rechunk",
]


async def exact_size(chunks: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through, raising once they prove longer or shorter than ``size``.

    A longer stream fails as soon as the first surplus byte arrives (its
    chunk is not yielded); a shorter one fails at its end. Empty chunks are
    dropped.

    Raises:
        SizeMismatchError: with ``expected`` and ``received`` (so far) in its detail.
    """
    received = 0
    async for chunk in chunks:
        if not chunk:
            continue
        received += len(chunk)
        if received > size:
            raise SizeMismatchError(
                f"stream is longer than the declared {size} bytes",
                expected=size,
                received=received,
            )
        yield chunk
    if received != size:
        raise SizeMismatchError(
            f"stream ended after {received} of the declared {size} bytes",
            expected=size,
            received=received,
        )


async def rechunk(chunks: AsyncIterable[bytes], part_size: int) -> AsyncIterator[bytes]:
    """Regroup a stream into parts of exactly ``part_size`` bytes (the last may be shorter).

    Each byte is copied at most once, and a chunk that is exactly one part
    passes through uncopied: this runs on the event loop, where every copy
    of a part delays all other requests. Less than one part is held back
    between chunks, as slices of the chunks it came from (a held tail keeps
    its chunk alive until the next part is cut). Empty chunks are dropped;
    an empty stream yields nothing.
    """
    if part_size <= 0:
        raise ValueError("part_size must be positive")
    pending: list[bytes | memoryview] = []  # the start of the next part, < part_size bytes
    held = 0
    async for chunk in chunks:
        size = len(chunk)
        if not size:
            continue
        if held + size < part_size:
            pending.append(chunk)
            held += size
            continue
        view = memoryview(chunk)
        start = 0
        if pending:
            start = part_size - held
            pending.append(view[:start])
            yield b"".join(pending)
            pending.clear()
        while size - start >= part_size:
            yield chunk if size == part_size else view[start : start + part_size].tobytes()
            start += part_size
        held = size - start
        if held:
            pending.append(view[start:])
    if pending:
        yield b"".join(pending)


async def coalesce(chunks: AsyncIterable[bytes], min_size: int) -> AsyncIterator[bytes]:
    """Join small chunks into pieces of at least ``min_size`` bytes (the last may be shorter).

    Chunks already that large pass through uncopied; small ones (a socket's
    64 KiB reads) are joined once. Hashing and writing then pay their
    per-call costs (a thread hand-off each) once per piece, not per packet.
    """
    pending: list[bytes] = []
    held = 0
    async for chunk in chunks:
        if not pending and len(chunk) >= min_size:
            yield chunk
            continue
        pending.append(chunk)
        held += len(chunk)
        if held >= min_size:
            yield b"".join(pending)
            pending.clear()
            held = 0
    if pending:
        yield b"".join(pending)


def _read_at(f: BinaryIO, offset: int, n: int) -> bytes:
    f.seek(offset)
    return f.read(n)


async def read_file_range(
    f: BinaryIO, start: int, end: int, chunk_size: int = DEFAULT_READ_CHUNK
) -> AsyncGenerator[bytes, None]:
    """Yield bytes ``[start, end)`` of an open file in chunks of at most ``chunk_size``.

    Each blocking read runs on a worker thread, so the event loop stays free;
    the file is not closed here. A file that ends early fails with
    ``SizeMismatchError`` rather than yielding a short stream silently.
    """
    pos = start
    while pos < end:
        data = await asyncio.to_thread(_read_at, f, pos, min(chunk_size, end - pos))
        if not data:
            raise SizeMismatchError(
                f"file ended at byte {pos}, expected {end}", expected=end, received=pos
            )
        pos += len(data)
        yield data


async def read_direct_range(
    reader: DirectReader, start: int, end: int, chunk_size: int = DEFAULT_READ_CHUNK
) -> AsyncGenerator[bytes, None]:
    """Yield bytes ``[start, end)`` through a ``DirectReader``, at most ``chunk_size`` at a time.

    A file that ends early fails with ``SizeMismatchError``, as ``read_file_range``.
    """
    pos = start
    while pos < end:
        data = await asyncio.to_thread(reader.read_at, pos, min(chunk_size, end - pos))
        if not data:
            raise SizeMismatchError(
                f"file ended at byte {pos}, expected {end}", expected=end, received=pos
            )
        pos += len(data)
        yield data


async def iter_file(path: Path, chunk_size: int = DEFAULT_READ_CHUNK) -> AsyncIterator[bytes]:
    """Yield a whole file in chunks of at most ``chunk_size``, reading on a worker thread."""
    f = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(f.read, chunk_size):
            yield chunk
    finally:
        await asyncio.to_thread(f.close)


class ClosingChunks:
    """An async iterator over ``source`` whose ``release`` runs exactly once.

    An async generator that is never started skips its ``finally`` on
    ``aclose``, which would leak a file or a connection when a caller opens a
    read and then decides not to send it. This wrapper releases on
    exhaustion, on error and on ``aclose``, whichever comes first.
    """

    __slots__ = ("_closed", "_release", "_source")

    def __init__(
        self, source: AsyncGenerator[bytes, None], release: Callable[[], Awaitable[None]]
    ) -> None:
        self._source = source
        self._release = release
        self._closed = False

    def __aiter__(self) -> ClosingChunks:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        try:
            return await self._source.__anext__()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stop the source and release its resources; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._source.aclose()
        finally:
            await self._release()
