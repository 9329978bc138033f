"""Staged files: direct-I/O appends with syncs and reopenings keep exact contents."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from artifactstore.staged_file import ALIGN, BUFFER_BYTES, StagedFile

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
