"""Staged files: direct-I/O appends with syncs and reopenings keep exact contents."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from artifactstore.staged_file import (
    ALIGN,
    BUFFER_BYTES,
    DirectReader,
    PieceWriter,
    StagedFile,
    give_back,
    take_buffer,
)

if TYPE_CHECKING:
    from pathlib import Path

SIZES = [0, 1, 100, ALIGN - 1, ALIGN, ALIGN + 1, 70_000, BUFFER_BYTES, BUFFER_BYTES + 3]


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("seed", range(8))
def test_appends_syncs_and_reopens_keep_exact_bytes(
    tmp_path: Path, seed: int, direct: bool
) -> None:
    """After every sync the file is exactly the bytes appended: no padding, nothing lost."""
    rng = random.Random(seed)
    path = tmp_path / "staged"
    expected = bytearray()
    writer = StagedFile(path, create=True, direct=direct)
    try:
        for _ in range(rng.randrange(1, 10)):
            data = rng.randbytes(rng.choice(SIZES))
            writer.append(data)
            expected += data
            if rng.random() < 0.5:
                writer.sync()
                assert path.stat().st_size == len(expected)
                assert path.read_bytes() == expected
            if rng.random() < 0.3:
                writer.sync()
                writer.close()
                writer = StagedFile(path, create=False, direct=direct)
                assert writer.size == len(expected)
        writer.sync()
    finally:
        writer.close()
    assert path.read_bytes() == expected


def test_create_refuses_an_existing_file(tmp_path: Path) -> None:
    """``create=True`` never truncates someone else's staged bytes."""
    path = tmp_path / "staged"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        StagedFile(path, create=True)
    assert path.read_bytes() == b"keep"


@pytest.mark.parametrize(
    ("offset", "length"),
    [(0, 1), (0, ALIGN), (1, ALIGN), (ALIGN - 1, 2), (5000, 70_000), (0, BUFFER_BYTES + 10)],
)
def test_direct_reader_returns_exact_ranges(tmp_path: Path, offset: int, length: int) -> None:
    """Unaligned offsets and lengths read back exactly the requested bytes (capped per call)."""
    data = random.Random(1).randbytes(BUFFER_BYTES + 3 * ALIGN + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)
    reader = DirectReader(path)
    try:
        got = reader.read_at(offset, length)
        assert got == data[offset : offset + min(length, len(got))]
        assert 0 < len(got) <= length
        assert reader.read_at(len(data), 10) == b""
        assert reader.read_at(len(data) - 3, 10) == data[-3:]
    finally:
        reader.close()


@pytest.mark.parametrize("last", [0, 1, ALIGN - 1, ALIGN, 3 * ALIGN + 5])
def test_piece_writer_writes_pieces_from_aligned_buffers_out_of_order(
    tmp_path: Path, last: int
) -> None:
    """Aligned pieces written in any order plus an unaligned last one give the exact bytes."""
    rng = random.Random(last)
    pieces = [rng.randbytes(2 * ALIGN) for _ in range(3)] + [rng.randbytes(last)]
    path = tmp_path / "pieces"
    writer = PieceWriter(path)
    buf = take_buffer()
    view = memoryview(buf)
    try:
        for i in (3, 1, 0, 2):
            view[: len(pieces[i])] = pieces[i]
            writer.write_at(view[: len(pieces[i])], i * 2 * ALIGN)
        writer.sync()
    finally:
        writer.close()
        view.release()
        give_back(buf)
    assert path.read_bytes() == b"".join(pieces)
    with pytest.raises(FileExistsError):
        PieceWriter(path)
