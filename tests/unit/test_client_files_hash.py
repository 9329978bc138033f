"""client/files.py ``blake3_file``: one read for small files, two buffers for large ones."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import blake3
import pytest

from artifactstore.client import files as upload
from artifactstore.client.files import SourceFile
from artifactstore.client.files import blake3_file as _blake3_file
from artifactstore.errors import SizeMismatchError

if TYPE_CHECKING:
    from pathlib import Path

BUFFER = 4096


@pytest.fixture(autouse=True)
def small_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 4 KiB buffer, so both paths run on small files."""
    monkeypatch.setattr(upload, "HASH_BUFFER", BUFFER)


def _item(path: Path) -> SourceFile:
    st = path.stat()
    return SourceFile(path.name, path, st.st_size, st.st_mtime_ns)


@pytest.mark.parametrize("size", [0, 1, BUFFER - 1, BUFFER, BUFFER + 1, 5 * BUFFER + 17])
def test_digest_and_progress_match_the_bytes(tmp_path: Path, size: int) -> None:
    """Every size around the buffer hashes to blake3 of the bytes; progress sums to the size."""
    path = tmp_path / "f"
    data = os.urandom(size)
    path.write_bytes(data)
    seen: list[int] = []
    digest = _blake3_file(_item(path), seen.append)
    assert digest.raw == blake3.blake3(data).digest()
    assert sum(seen) == size


@pytest.mark.parametrize(("listed", "now"), [(100, 101), (100, 99), (3 * BUFFER, 3 * BUFFER + 1)])
def test_a_file_that_changed_size_is_refused(tmp_path: Path, listed: int, now: int) -> None:
    """A file grown or shrunk since it was listed raises SizeMismatchError, on both paths."""
    path = tmp_path / "f"
    path.write_bytes(os.urandom(listed))
    item = _item(path)
    path.write_bytes(os.urandom(now))
    with pytest.raises(SizeMismatchError, match="changed while it was read"):
        _blake3_file(item, lambda _n: None)
