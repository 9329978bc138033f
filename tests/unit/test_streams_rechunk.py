"""``storage.streams.rechunk``: the fixed-size parts of s3 multipart uploads and postgres blocks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from artifactstore.storage.streams import rechunk

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable


async def _stream(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _parts(chunks: Iterable[bytes], part_size: int) -> list[bytes]:
    return [part async for part in rechunk(_stream(chunks), part_size)]


def _numbered(sizes: list[int]) -> list[bytes]:
    """Chunks of the given sizes cut from one counting byte sequence, so misordering shows."""
    data = bytes(i % 251 for i in range(sum(sizes)))
    chunks: list[bytes] = []
    pos = 0
    for size in sizes:
        chunks.append(data[pos : pos + size])
        pos += size
    return chunks


@pytest.mark.parametrize(
    ("sizes", "part_size", "expected"),
    [
        pytest.param([3, 3, 3], 4, [4, 4, 1], id="chunks-straddle-parts"),
        pytest.param([10], 3, [3, 3, 3, 1], id="one-chunk-of-several-parts"),
        pytest.param([2, 10], 3, [3, 3, 3, 3], id="held-bytes-then-several-parts"),
        pytest.param([2, 1, 9], 3, [3, 3, 3, 3], id="chunk-completes-a-part-exactly"),
        pytest.param([8], 4, [4, 4], id="exact-multiple-in-one-chunk"),
        pytest.param([1, 3, 2, 2], 4, [4, 4], id="exact-multiple-across-chunks"),
        pytest.param([4, 4, 4], 4, [4, 4, 4], id="part-sized-chunks"),
        pytest.param([1, 1, 1], 8, [3], id="stream-shorter-than-a-part"),
        pytest.param([0, 2, 0, 0, 2, 0], 2, [2, 2], id="empty-chunks"),
    ],
)
async def test_part_sizes(sizes: list[int], part_size: int, expected: list[int]) -> None:
    """Every part is exactly part_size bytes except a shorter last one, in stream order."""
    chunks = _numbered(sizes)
    parts = await _parts(chunks, part_size)
    assert [len(p) for p in parts] == expected
    assert b"".join(parts) == b"".join(chunks)


@pytest.mark.parametrize("chunks", [[], [b""], [b"", b"", b""]], ids=["no-chunks", "one", "three"])
async def test_empty_stream_yields_nothing(chunks: list[bytes]) -> None:
    """A stream without a single byte yields no part, not one empty part."""
    assert await _parts(chunks, 4) == []


async def test_part_sized_chunks_pass_through_uncopied() -> None:
    """A chunk that is exactly one part, with nothing held back, is yielded as the same object."""
    chunks = _numbered([4, 4])
    parts = await _parts(chunks, 4)
    assert parts[0] is chunks[0]
    assert parts[1] is chunks[1]


async def test_parts_are_bytes() -> None:
    """Parts are bytes, never memoryviews of the caller's chunks, whatever the cut."""
    parts = await _parts(_numbered([1, 6, 4, 3]), 4)
    assert all(type(p) is bytes for p in parts)


@pytest.mark.parametrize("part_size", [0, -1])
async def test_rejects_non_positive_part_size(part_size: int) -> None:
    """A part size below one byte is a programming error."""
    with pytest.raises(ValueError, match="part_size"):
        await _parts([b"abc"], part_size)


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=40), max_size=20),
    part_size=st.integers(min_value=1, max_value=16),
)
async def test_any_chunking(sizes: list[int], part_size: int) -> None:
    """For any chunking the parts rebuild the stream and only the last is short."""
    chunks = _numbered(sizes)
    parts = await _parts(chunks, part_size)
    assert b"".join(parts) == b"".join(chunks)
    assert all(len(p) == part_size for p in parts[:-1])
    assert all(0 < len(p) <= part_size for p in parts[-1:])
