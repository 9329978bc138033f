"""Digest values and the one-pass dual hasher."""

from __future__ import annotations

import functools
import hashlib

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from artifactstore.digests import PARALLEL_THRESHOLD_BYTES, Digest, DualHasher, hash_bytes
from artifactstore.errors import InvalidDigestError


@given(st.lists(st.binary(max_size=3000), max_size=20))
def test_dual_hasher_matches_the_reference_functions(chunks: list[bytes]) -> None:
    """However the bytes are split, both digests equal hashlib's and blake3's."""
    data = b"".join(chunks)
    result = DualHasher().hash_iter(chunks)
    assert result.sha256.raw == hashlib.sha256(data).digest()
    assert result.blake3.raw == blake3.blake3(data).digest()
    assert result.size == len(data)


def test_large_buffers_take_the_two_thread_path() -> None:
    """Buffers above the threshold hash on two threads and still give the same digests."""
    data = bytes(range(256)) * (PARALLEL_THRESHOLD_BYTES // 256 * 3 + 7)
    hasher = DualHasher()
    hasher.update(data[:10])
    hasher.update(memoryview(data)[10:])
    assert hasher.result() == hash_bytes(data)
    assert hasher.result().sha256.raw == hashlib.sha256(data).digest()


def test_text_forms_round_trip_and_compare() -> None:
    """``alg:hex`` parses, formats back, and compares in constant time."""
    d = hash_bytes(b"abc").sha256
    assert Digest.parse(str(d)) == d
    assert Digest.parse(d.hex, algorithm="sha256") == d
    assert d.matches(Digest.parse(str(d)))
    assert not d.matches(hash_bytes(b"abd").sha256)
    assert not d.matches(Digest("blake3", d.raw))


@pytest.mark.parametrize(
    ("text", "algorithm"),
    [
        ("sha256:" + "A" * 64, None),
        ("sha256:" + "0" * 63, None),
        ("sha256:" + "0" * 65, None),
        ("md5:" + "0" * 32, None),
        ("0" * 64, None),
        ("blake3:" + "0" * 64, "sha256"),
        ("sha256:" + "g" * 64, None),
        ("sha256:" + "0" * 63 + "\n", None),
    ],
)
def test_malformed_digests_are_refused(text: str, algorithm: str | None) -> None:
    """Wrong length, alphabet, case, algorithm or a missing prefix raise InvalidDigestError."""
    with pytest.raises(InvalidDigestError):
        Digest.parse(text, algorithm=algorithm)  # type: ignore[arg-type]


def test_raw_length_is_checked() -> None:
    """A digest of the wrong byte length cannot be built."""
    with pytest.raises(InvalidDigestError):
        Digest("sha256", b"\x00" * 31)


def test_streamed_updates_match_and_drain() -> None:
    """update_stream keeps sha256 in order behind blake3 and gives the same digests."""
    pieces = [bytes([i]) * (PARALLEL_THRESHOLD_BYTES + i * 1000) for i in range(10)]
    pieces.insert(3, b"small")
    written: list[int] = []
    hasher = DualHasher()
    for piece in pieces:
        hasher.update_stream(piece, functools.partial(written.append, len(piece)))
    data = b"".join(pieces)
    assert hasher.size == len(data)
    assert hasher.result() == hash_bytes(data)
    assert written == [len(p) for p in pieces]
    hasher.update_stream(b"x" * PARALLEL_THRESHOLD_BYTES)
    hasher.drain()
    assert hasher.result() == hash_bytes(data + b"x" * PARALLEL_THRESHOLD_BYTES)
