"""Canonical CBOR (RFC 8949 s4.2.1): Appendix A vectors, strict rejections, properties."""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifactstore.cbor import MAX_DEPTH, decode_canonical, encode_canonical
from artifactstore.errors import ManifestError, NonCanonicalCborError

# RFC 8949 Appendix A: every example that is also a deterministic encoding.
VALID_VECTORS: list[tuple[Any, str]] = [
    (0, "00"),
    (1, "01"),
    (10, "0a"),
    (23, "17"),
    (24, "1818"),
    (25, "1819"),
    (100, "1864"),
    (1000, "1903e8"),
    (1000000, "1a000f4240"),
    (1000000000000, "1b000000e8d4a51000"),
    (18446744073709551615, "1bffffffffffffffff"),
    (-18446744073709551616, "3bffffffffffffffff"),
    (-1, "20"),
    (-10, "29"),
    (-100, "3863"),
    (-1000, "3903e7"),
    (False, "f4"),
    (True, "f5"),
    (None, "f6"),
    (b"", "40"),
    (b"\x01\x02\x03\x04", "4401020304"),
    ("", "60"),
    ("a", "6161"),
    ("IETF", "6449455446"),
    ('"\\', "62225c"),
    ("\u00fc", "62c3bc"),
    ("\u6c34", "63e6b0b4"),
    ("\U00010151", "64f0908591"),
    ([], "80"),
    ([1, 2, 3], "83010203"),
    ([1, [2, 3], [4, 5]], "8301820203820405"),
    (list(range(1, 26)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    ({}, "a0"),
    ({1: 2, 3: 4}, "a201020304"),
    ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    (["a", {"b": "c"}], "826161a161626163"),
    (
        {"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"},
        "a56161614161626142616361436164614461656145",
    ),
]

# RFC 8949 Appendix A: examples outside the deterministic subset we accept.
REJECTED_VECTORS: list[tuple[str, str]] = [
    ("c249010000000000000000", "tags"),  # bignum 2**64
    ("c349010000000000000000", "tags"),  # negative bignum
    ("f90000", "float"),
    ("f98000", "float"),
    ("f93c00", "float"),
    ("fb3ff199999999999a", "float"),
    ("f93e00", "float"),
    ("f97bff", "float"),
    ("fa47c35000", "float"),
    ("fa7f7fffff", "float"),
    ("fb7e37e43c8800759c", "float"),
    ("f90001", "float"),
    ("f90400", "float"),
    ("f9c400", "float"),
    ("fbc010666666666666", "float"),
    ("f97c00", "float"),
    ("f97e00", "float"),
    ("f9fc00", "float"),
    ("fa7f800000", "float"),
    ("fa7fc00000", "float"),
    ("faff800000", "float"),
    ("fb7ff0000000000000", "float"),
    ("fb7ff8000000000000", "float"),
    ("fbfff0000000000000", "float"),
    ("f7", "undefined"),
    ("f0", "simple value 16"),
    ("f8ff", "simple values"),
    ("c074323031332d30332d32315432303a30343a30305a", "tags"),
    ("c11a514b67b0", "tags"),
    ("c1fb41d452d9ec200000", "tags"),
    ("d74401020304", "tags"),
    ("d818456449455446", "tags"),
    ("d82076687474703a2f2f7777772e6578616d706c652e636f6d", "tags"),
    ("5f42010243030405ff", "indefinite-length byte string"),
    ("7f657374726561646d696e67ff", "indefinite-length text string"),
    ("9fff", "indefinite-length array"),
    ("9f018202039f0405ffff", "indefinite-length array"),
    ("9f01820203820405ff", "indefinite-length array"),
    ("83018202039f0405ff", "indefinite-length array"),
    ("83019f0203ff820405", "indefinite-length array"),
    ("9f0102030405060708090a0b0c0d0e0f101112131415161718181819ff", "indefinite-length array"),
    ("bf61610161629f0203ffff", "indefinite-length map"),
    ("826161bf61626163ff", "indefinite-length map"),
    ("bf6346756ef563416d7421ff", "indefinite-length map"),
]

# Hand-made violations of the deterministic rules, with the offset and words expected.
HANDMADE: list[tuple[str, int, str]] = [
    ("1817", 0, "non-shortest"),  # 23 in two bytes
    ("190017", 0, "non-shortest"),  # 23 in three bytes
    ("1900ff", 0, "non-shortest"),  # 255 in three bytes
    ("1a0000ffff", 0, "non-shortest"),
    ("1b00000000ffffffff", 0, "non-shortest"),
    ("3817", 0, "non-shortest"),  # -24 in two bytes
    ("5801ff", 0, "non-shortest"),  # byte-string length 1 in two bytes
    ("780161", 0, "non-shortest"),  # text length 1 in two bytes
    ("980101", 0, "non-shortest"),  # array length 1 in two bytes
    ("b8010101", 0, "non-shortest"),  # map length 1 in two bytes
    ("8218170102", 1, "non-shortest"),  # nested inside an array
    ("a203040102", 3, "out of order"),  # {3:4, 1:2}
    ("a2616201616102", 4, "out of order"),  # {"b":1, "a":2}
    ("a201020103", 3, "duplicate"),  # {1:2, 1:3}
    ("a2616101616102", 4, "duplicate"),  # {"a":1, "a":2}
    ("a2f401f402", 3, "duplicate"),  # {false:1, false:2}
    ("a2011818f503", 4, "collides"),  # {1:24, true:3}: distinct in CBOR, one key in Python
    ("a28001f402", 1, "map keys must be"),  # array as a key
    ("0000", 1, "trailing"),
    ("830102", 0, "truncated"),  # 3 items declared, 2 bytes left
    ("8301021a00", 3, "truncated"),
    ("18", 0, "truncated"),
    ("1a0000", 0, "truncated"),
    ("6261", 0, "truncated"),
    ("4301", 0, "truncated"),
    ("", 0, "empty"),
    ("62c328", 1, "invalid UTF-8"),  # bad continuation byte
    ("63eda080", 1, "invalid UTF-8"),  # an encoded surrogate U+D800
    ("61ff", 1, "invalid UTF-8"),
    ("1c", 0, "reserved"),
    ("1d", 0, "reserved"),
    ("1e", 0, "reserved"),
    ("5c", 0, "reserved"),
    ("fc", 0, "reserved"),
    ("dc", 0, "reserved"),
    ("1f", 0, "invalid for a unsigned integer"),
    ("ff", 0, "break"),
    ("8201ff", 2, "break"),
]


@pytest.mark.parametrize(("value", "hexed"), VALID_VECTORS, ids=[h for _, h in VALID_VECTORS])
def test_rfc8949_deterministic_examples_round_trip(value: Any, hexed: str) -> None:
    """Each deterministic Appendix A example decodes to its value and re-encodes identically."""
    data = bytes.fromhex(hexed)
    decoded = decode_canonical(data)
    assert decoded == value
    assert type(decoded) is type(value)
    assert encode_canonical(decoded) == data
    assert encode_canonical(value) == data


@pytest.mark.parametrize(("hexed", "words"), REJECTED_VECTORS, ids=[h for h, _ in REJECTED_VECTORS])
def test_rfc8949_non_deterministic_examples_are_rejected(hexed: str, words: str) -> None:
    """Appendix A examples using floats, tags, simple values or indefinite lengths are refused."""
    with pytest.raises(NonCanonicalCborError, match=words):
        decode_canonical(bytes.fromhex(hexed))


@pytest.mark.parametrize(("hexed", "offset", "words"), HANDMADE, ids=[h for h, _, _ in HANDMADE])
def test_handmade_violations_name_the_problem_and_offset(
    hexed: str, offset: int, words: str
) -> None:
    """Each violation is refused with a message naming what is wrong and at which byte."""
    with pytest.raises(NonCanonicalCborError, match=words) as info:
        decode_canonical(bytes.fromhex(hexed))
    assert info.value.detail["offset"] == offset
    assert f"at byte {offset}:" in info.value.message
    assert info.value.code == "non_canonical_cbor"


def test_non_canonical_error_is_a_manifest_error_and_value_error() -> None:
    """Callers catching ManifestError or ValueError also catch non-canonical CBOR."""
    with pytest.raises(ManifestError):
        decode_canonical(b"\x18\x01")
    with pytest.raises(ValueError, match="non-shortest"):
        decode_canonical(b"\x18\x01")


@pytest.mark.parametrize(
    "hexed",
    [
        "5bffffffffffffffff",  # byte string of 2**64-1 bytes
        "7b7fffffffffffffff",  # text string of 2**63-1 bytes
        "9bffffffffffffffff00",  # array of 2**64-1 items
        "bbffffffffffffffff0000",  # map of 2**64-1 pairs
        "9a7fffffff",  # array of 2**31-1 items
        "8501020304",  # 5 items declared, 4 present
    ],
)
def test_declared_lengths_beyond_the_input_are_refused_up_front(hexed: str) -> None:
    """A head that declares more than the input holds is refused before anything is allocated."""
    with pytest.raises(NonCanonicalCborError, match="truncated") as info:
        decode_canonical(bytes.fromhex(hexed))
    assert info.value.detail["offset"] == 0


def test_nesting_up_to_the_limit_is_accepted_and_beyond_is_refused() -> None:
    """MAX_DEPTH nested arrays decode; one more is refused on decode and on encode."""
    deepest: Any = 0
    for _ in range(MAX_DEPTH):
        deepest = [deepest]
    data = encode_canonical(deepest)
    assert decode_canonical(data) == deepest
    with pytest.raises(NonCanonicalCborError, match="nesting") as info:
        decode_canonical(b"\x81" + data)
    assert info.value.detail["offset"] == MAX_DEPTH
    with pytest.raises(ValueError, match="nesting"):
        encode_canonical([deepest])


def test_very_deep_hostile_input_does_not_recurse_without_bound() -> None:
    """A hundred thousand nested array heads fail fast with a clear error, no RecursionError."""
    with pytest.raises(NonCanonicalCborError, match="nesting"):
        decode_canonical(b"\x81" * 100_000 + b"\x00")


def test_cyclic_structures_are_refused_on_encode() -> None:
    """A list containing itself fails with ValueError instead of recursing forever."""
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="cycle"):
        encode_canonical(cycle)


def test_map_keys_sort_bytewise_not_length_first() -> None:
    """Keys sort by encoded bytes (RFC 8949), unlike cbor2's RFC 7049 length-first order."""
    value = {-1: "neg", 24: "int24", "a": "text", 1000: "int1000"}
    ours = encode_canonical(value)
    # Bytewise, 0x1818 (24) sorts before 0x1903e8 (1000), 0x20 (-1) and 0x6161 ("a").
    expected = ["a4", "1818", "65696e743234", "1903e8", "67696e7431303030"]
    expected += ["20", "636e6567", "6161", "6474657874"]
    assert ours.hex() == "".join(expected)
    assert cbor2.dumps(value, canonical=True) != ours
    assert decode_canonical(ours) == value
    with pytest.raises(NonCanonicalCborError, match="out of order"):
        decode_canonical(cbor2.dumps(value, canonical=True))


def test_shorter_text_keys_sort_first_because_the_head_holds_the_length() -> None:
    """Bytewise order of encodings puts "b" (0x6162) before "aa" (0x626161)."""
    assert encode_canonical({"aa": 1, "b": 2}).hex() == "a2616202626161" + "01"


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (1.5, TypeError),
        (0.0, TypeError),
        ([1, {"x": 2.0}], TypeError),
        (2**64, ValueError),
        (-(2**64) - 1, ValueError),
        ("\udc80", ValueError),
        ({1.5: 1}, TypeError),
        ({(1, 2): 1}, TypeError),
        ({1, 2}, TypeError),
        (object(), TypeError),
    ],
)
def test_encoder_refuses_values_outside_the_data_model(
    value: object, error: type[Exception]
) -> None:
    """Floats, oversized ints, lone surrogates, composite keys and other types are refused."""
    with pytest.raises(error):
        encode_canonical(value)


def test_encoder_accepts_bytes_likes_and_enum_subclasses() -> None:
    """bytearray, memoryview, StrEnum and IntEnum encode as their plain values."""

    class Colour(StrEnum):
        RED = "red"

    class Level(IntEnum):
        HIGH = 7

    assert encode_canonical(bytearray(b"ab")) == encode_canonical(b"ab")
    assert encode_canonical(memoryview(b"ab")) == encode_canonical(b"ab")
    assert encode_canonical(Colour.RED) == encode_canonical("red")
    assert encode_canonical({Colour.RED: Level.HIGH}) == encode_canonical({"red": 7})
    assert encode_canonical((1, 2)) == encode_canonical([1, 2])


def test_decoder_accepts_bytearray_and_memoryview_input() -> None:
    """Any bytes-like input decodes the same as bytes."""
    assert decode_canonical(bytearray(b"\x83\x01\x02\x03")) == [1, 2, 3]
    assert decode_canonical(memoryview(b"\x83\x01\x02\x03")) == [1, 2, 3]


# --------------------------------------------------------------------------- properties

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=20)
)
keys = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.binary(max_size=8)
    | st.text(max_size=8)
)


values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(keys, children, max_size=6),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(values)
def test_decode_inverts_encode(value: Any) -> None:
    """decode(encode(x)) == x for every value of the data model."""
    assert decode_canonical(encode_canonical(value)) == value


@settings(max_examples=200, deadline=None)
@given(values)
def test_encoding_is_byte_stable(value: Any) -> None:
    """Encoding a value, or its decoded copy, always gives the same bytes."""
    data = encode_canonical(value)
    assert encode_canonical(value) == data
    assert encode_canonical(decode_canonical(data)) == data


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, scalars, max_size=8))
def test_map_entries_follow_the_bytewise_order_of_encoded_keys(value: dict[Any, Any]) -> None:
    """A map encodes as its head plus key/value encodings sorted by encoded key; cbor2 agrees."""
    entries = sorted((encode_canonical(k), encode_canonical(v)) for k, v in value.items())
    expected = bytes([0xA0 + len(value)]) + b"".join(k + v for k, v in entries)
    data = encode_canonical(value)
    assert data == expected
    assert cbor2.loads(data) == value


@settings(max_examples=200, deadline=None)
@given(values, st.data())
def test_any_truncation_or_extension_is_refused(value: Any, data: st.DataObject) -> None:
    """Cutting an encoding short or appending a byte always raises NonCanonicalCborError."""
    encoded = encode_canonical(value)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(NonCanonicalCborError):
        decode_canonical(encoded[:cut])
    with pytest.raises(NonCanonicalCborError, match="trailing"):
        decode_canonical(encoded + b"\x00")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_either_decode_canonically_or_raise_our_error(blob: bytes) -> None:
    """Random input never crashes the decoder; whatever it accepts re-encodes identically."""
    try:
        value = decode_canonical(blob)
    except NonCanonicalCborError:
        return
    assert encode_canonical(value) == blob
