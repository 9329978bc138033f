"""client/sink.py: VerifiedFile writes, hashes and commits only bytes that match, on a real disk.

Every test runs with direct (``O_DIRECT``) and buffered writes; sizes cross
buffer boundaries and end mid-block, so the aligned and the tail paths both run.
"""

from __future__ import annotations

import errno
import hashlib
import os
import resource
import signal
import stat
from typing import TYPE_CHECKING

import blake3
import pytest

from artifactstore.client.sink import BUFFER_BYTES, BodyEndedError, VerifiedFile
from artifactstore.digests import Digest
from artifactstore.errors import DigestMismatchError, SizeMismatchError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

SIZE = 2 * BUFFER_BYTES + 4096 * 3 + 123  # three buffers, the last ending mid-block


@pytest.fixture(scope="module")
def data() -> bytes:
    return os.urandom(SIZE)


@pytest.fixture(params=[True, False], ids=["direct", "buffered"])
def direct(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def _digests(data: bytes) -> tuple[Digest, Digest]:
    return (
        Digest("sha256", hashlib.sha256(data).digest()),
        Digest("blake3", blake3.blake3(data).digest()),
    )


def _open(target: Path, data: bytes, *, direct: bool, size: int | None = None) -> VerifiedFile:
    sha, b3 = _digests(data)
    return VerifiedFile(
        target, size=len(data) if size is None else size, sha256=sha, blake3=b3, direct=direct
    )


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pieces(data: bytes, size: int) -> Callable[[memoryview], int]:
    """A ``readinto`` handing out ``data`` at most ``size`` bytes a call, then 0."""
    sent = 0

    def readinto(view: memoryview) -> int:
        nonlocal sent
        n = min(len(view), size, len(data) - sent)
        view[:n] = data[sent : sent + n]
        sent += n
        return n

    return readinto


def test_exact_bytes_are_committed_with_the_plain_mode(
    tmp_path: Path, data: bytes, direct: bool
) -> None:
    """Written in odd pieces: the target holds the same bytes, mode 0666 & ~umask, no temp file."""
    target = tmp_path / "out.bin"
    with _open(target, data, direct=direct) as sink:
        for start in range(0, SIZE, 1_000_003):
            sink.write(data[start : start + 1_000_003])
        assert sink.written == SIZE
        assert not target.exists()
        sink.commit()
    assert target.read_bytes() == data
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_committing_replaces_an_existing_file(tmp_path: Path, data: bytes, direct: bool) -> None:
    """A file already at the target is replaced whole."""
    target = tmp_path / "out.bin"
    target.write_bytes(b"old" * 100_000)
    with _open(target, data[:5000], direct=direct) as sink:
        sink.write(data[:5000])
        sink.commit()
    assert target.read_bytes() == data[:5000]


@pytest.mark.parametrize("where", [0, BUFFER_BYTES + 7, SIZE - 1])
def test_one_flipped_byte_leaves_no_file(
    tmp_path: Path, data: bytes, direct: bool, where: int
) -> None:
    """One byte differs: DigestMismatchError naming sha256; no target, no temporary file."""
    target = tmp_path / "out.bin"
    bad = bytearray(data)
    bad[where] ^= 0x01
    with _open(target, data, direct=direct) as sink:
        sink.write(bad)
        with pytest.raises(DigestMismatchError, match="sha256 is") as caught:
            sink.commit()
        assert list(tmp_path.iterdir()) == []  # commit itself removed it
    assert caught.value.detail["algorithm"] == "sha256"
    assert caught.value.detail["expected"] == str(_digests(data)[0])
    assert caught.value.detail["actual"] == str(_digests(bytes(bad))[0])
    assert list(tmp_path.iterdir()) == []


def test_a_small_file_is_verified_too(tmp_path: Path, data: bytes, direct: bool) -> None:
    """Under one buffer (hashed and written in commit, no lanes): right bytes commit, wrong not."""
    good, bad = tmp_path / "good.bin", tmp_path / "bad.bin"
    with _open(good, data[:5000], direct=direct) as sink:
        sink.write(data[:5000])
        sink.commit()
    with _open(bad, data[:5000], direct=direct) as sink:
        sink.write(data[1:5001])
        with pytest.raises(DigestMismatchError):
            sink.commit()
    assert good.read_bytes() == data[:5000]
    assert [p.name for p in tmp_path.iterdir()] == ["good.bin"]


def test_a_wrong_blake3_alone_is_caught(tmp_path: Path, data: bytes) -> None:
    """sha256 matches but blake3 does not: DigestMismatchError naming blake3, no file."""
    sha, _ = _digests(data)
    target = tmp_path / "out.bin"
    wrong = Digest("blake3", bytes(32))
    with VerifiedFile(target, size=SIZE, sha256=sha, blake3=wrong, name="pkg/f.bin") as sink:
        sink.write(data)
        with pytest.raises(DigestMismatchError, match=r"^pkg/f\.bin: blake3 is") as caught:
            sink.commit()
    assert caught.value.detail == {
        "path": "pkg/f.bin",
        "algorithm": "blake3",
        "expected": str(wrong),
        "actual": str(_digests(data)[1]),
    }
    assert list(tmp_path.iterdir()) == []


def test_short_input_is_a_size_mismatch(tmp_path: Path, data: bytes, direct: bool) -> None:
    """Fewer bytes than ``size``: SizeMismatchError at commit with both counts; no file."""
    target = tmp_path / "out.bin"
    with _open(target, data, direct=direct) as sink:
        sink.write(data[:-1])
        with pytest.raises(SizeMismatchError, match="received") as caught:
            sink.commit()
    assert caught.value.detail == {"path": str(target), "expected": SIZE, "actual": SIZE - 1}
    assert list(tmp_path.iterdir()) == []


def test_long_input_is_refused_as_it_arrives(tmp_path: Path, data: bytes, direct: bool) -> None:
    """More bytes than ``size``: write raises SizeMismatchError, keeping what fitted."""
    target = tmp_path / "out.bin"
    with _open(target, data, direct=direct) as sink:
        sink.write(data)
        with pytest.raises(SizeMismatchError, match="more than"):
            sink.write(b"x")
        assert sink.written == SIZE
        with pytest.raises(SizeMismatchError, match="more than"):
            sink.receive(_pieces(b"x", 1), 1)
    assert list(tmp_path.iterdir()) == []


def test_restart_forgets_everything(tmp_path: Path, data: bytes, direct: bool) -> None:
    """Bytes written before restart() count for nothing: the right bytes after it commit."""
    target = tmp_path / "out.bin"
    with _open(target, data, direct=direct) as sink:
        sink.write(os.urandom(BUFFER_BYTES + 99))
        sink.restart()
        assert sink.written == 0
        sink.write(data)
        sink.commit()
    assert target.read_bytes() == data


def test_copy_from_fd_copies_a_real_file(tmp_path: Path, data: bytes, direct: bool) -> None:
    """A file's descriptor, read from offset 0 whatever its position; progress sums to the size."""
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    target = tmp_path / "out.bin"
    seen: list[int] = []
    fd = os.open(source, os.O_RDONLY)
    try:
        os.lseek(fd, 1000, os.SEEK_SET)
        with _open(target, data, direct=direct) as sink:
            sink.copy_from_fd(fd, seen.append)
            sink.commit()
        assert os.lseek(fd, 0, os.SEEK_CUR) == 1000
    finally:
        os.close(fd)
    assert target.read_bytes() == data
    assert sum(seen) == SIZE
    assert len(seen) == 3


def test_copy_from_fd_refuses_a_longer_file(tmp_path: Path, data: bytes) -> None:
    """A source longer than ``size``: SizeMismatchError; nothing left behind."""
    source = tmp_path / "source.bin"
    source.write_bytes(data + b"!")
    target = tmp_path / "out.bin"
    fd = os.open(source, os.O_RDONLY)
    try:
        with _open(target, data, direct=True) as sink, pytest.raises(SizeMismatchError):
            sink.copy_from_fd(fd)
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.bin"]


def test_copy_from_fd_of_a_changed_file_fails_verification(tmp_path: Path, data: bytes) -> None:
    """A source with the right size but other bytes: DigestMismatchError at commit."""
    source = tmp_path / "source.bin"
    source.write_bytes(data[::-1])
    target = tmp_path / "out.bin"
    fd = os.open(source, os.O_RDONLY)
    try:
        with _open(target, data, direct=True) as sink:
            sink.copy_from_fd(fd)
            with pytest.raises(DigestMismatchError):
                sink.commit()
    finally:
        os.close(fd)
    assert not target.exists()


def test_receive_keeps_what_arrived_before_the_source_ended(
    tmp_path: Path, data: bytes, direct: bool
) -> None:
    """A source ending early: BodyEndedError, ``written`` counts what came; the rest resumes."""
    target = tmp_path / "out.bin"
    cut = BUFFER_BYTES + 4096 * 2 + 5
    seen: list[int] = []
    with _open(target, data, direct=direct) as sink:
        with pytest.raises(BodyEndedError, match="ended"):
            sink.receive(_pieces(data[:cut], 65536 + 3), SIZE, seen.append)
        assert isinstance(BodyEndedError("x"), ConnectionError)
        assert sink.written == cut
        assert sum(seen) == cut
        sink.receive(_pieces(data[cut:], 1 << 20), SIZE - cut, seen.append)
        sink.commit()
    assert target.read_bytes() == data
    assert sum(seen) == SIZE


def test_receive_passes_the_sinks_own_buffers(tmp_path: Path, data: bytes) -> None:
    """The source is handed views of at most one buffer, never more than the bytes still due."""
    lengths: list[int] = []
    inner = _pieces(data, 1 << 30)

    def readinto(view: memoryview) -> int:
        lengths.append(len(view))
        return inner(view)

    with _open(tmp_path / "out.bin", data, direct=True) as sink:
        sink.receive(readinto, SIZE)
        sink.commit()
    assert lengths == [BUFFER_BYTES, BUFFER_BYTES, SIZE - 2 * BUFFER_BYTES]


def test_discard_is_idempotent_and_the_context_cleans_up(tmp_path: Path, data: bytes) -> None:
    """An exception inside ``with`` removes the temporary file; discard() twice is harmless."""
    target = tmp_path / "out.bin"
    sink = _open(target, data, direct=True)

    def fail_inside() -> None:
        with sink:
            sink.write(data[:100])
            assert len(list(tmp_path.iterdir())) == 1
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    sink.discard()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="already"):
        sink.write(b"x")


def _write_and_commit(sink: VerifiedFile, data: bytes) -> None:
    sink.write(data)
    sink.commit()


def test_a_failing_write_surfaces_and_leaves_no_file(tmp_path: Path, data: bytes) -> None:
    """The kernel refuses a write (file size limit, EFBIG): the error surfaces, no file is left."""
    target = tmp_path / "out.bin"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (BUFFER_BYTES, hard))
    try:
        with _open(target, data, direct=True) as sink, pytest.raises(OSError) as caught:
            _write_and_commit(sink, data)  # the lane's error surfaces at either call
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert caught.value.errno == errno.EFBIG
    assert list(tmp_path.iterdir()) == []


def test_empty_file(tmp_path: Path) -> None:
    """Zero bytes commit to an empty file."""
    target = tmp_path / "empty"
    with _open(target, b"", direct=True) as sink:
        sink.commit()
    assert target.read_bytes() == b""
