"""Canonical CBOR: RFC 8949 section 4.2.1 core deterministic encoding.

This module owns the byte form of every canonical document in the system:
manifests (DESIGN section 3) and event payloads (DESIGN section 2). It knows
nothing about what those documents mean; ``manifest.py`` and ``events/``
give them a schema.

The data model is deliberately small: ``None``, ``bool``, ``int`` in
``-2**64 .. 2**64-1`` (major types 0 and 1), byte strings, text strings,
arrays and maps whose keys are scalars of those kinds. Floats, tags,
``undefined``, other simple values and indefinite lengths are not part of it.

Encoding follows RFC 8949 section 4.2.1: definite lengths, the shortest head
for every integer and length (section 4.2.1 rule 1), map keys sorted by the
bytewise lexicographic order of their deterministic encodings (section
4.2.1 rule 3). Note that this is *not* the "length-first" order of RFC 7049
section 3.9 that ``cbor2.dumps(..., canonical=True)`` uses: the two differ
for keys such as ``24`` (``0x1818``) and ``-1`` (``0x20``).

Decoding is strict: any byte string that ``encode_canonical`` would not have
produced for the value it denotes is refused with ``NonCanonicalCborError``,
whose message and ``detail["offset"]`` name the first offending byte. The
decoder never allocates from a declared length before checking that the
input holds that many bytes, and it limits nesting depth, so hostile input
costs at most time linear in its size.

Arrays decode to ``list``, maps to ``dict``, byte strings to ``bytes``.

``decode_trusted`` is the exception, for bytes this code wrote itself and a
hash chain protects (the event log when views are folded): cbor2's C
decoder, no canonical-form proof.
"""

from __future__ import annotations

from collections.abc import Mapping
from operator import itemgetter
from typing import Any

import cbor2

from artifactstore.errors import NonCanonicalCborError

__all__ = [
    "MAX_DEPTH",
    "decode_canonical",
    "decode_trusted",
    "encode_canonical",
]

MAX_DEPTH = 64
"""How many arrays and maps may nest inside each other, in both directions."""

_UINT_LIMIT = 1 << 64

# Major types (RFC 8949 section 3.1).
_MT_UINT = 0
_MT_NINT = 1
_MT_BYTES = 2
_MT_TEXT = 3
_MT_ARRAY = 4
_MT_MAP = 5
_MT_TAG = 6
_MT_SIMPLE = 7

# Additional-information values (RFC 8949 section 3).
_AI_1BYTE = 24
_AI_2BYTES = 25
_AI_4BYTES = 26
_AI_8BYTES = 27
_AI_INDEFINITE = 31

# Smallest argument each wider head may carry; anything less has a shorter form.
_MIN_2BYTES = 0x100
_MIN_4BYTES = 0x1_0000
_MIN_8BYTES = 0x1_0000_0000

_FALSE = 0xF4
_TRUE = 0xF5
_NULL = 0xF6

_MAJOR_NAMES = (
    "unsigned integer",
    "negative integer",
    "byte string",
    "text string",
    "array",
    "map",
    "tag",
    "simple value or float",
)

# Heads of 0..255 for each major type, precomputed: most heads are short.
_SHORT_HEADS: tuple[tuple[bytes, ...], ...] = tuple(
    tuple(
        bytes((major << 5 | n,)) if n < _AI_1BYTE else bytes((major << 5 | _AI_1BYTE, n))
        for n in range(256)
    )
    for major in range(8)
)


# --------------------------------------------------------------------------- encoding

# Encoded text map keys, by key: documents repeat the same few keys (a manifest
# has five per file), and encoding them once each is the biggest saving.
# Only exact ``str`` keys are cached, never ints: ``True == 1`` would collide.
_TEXT_KEYS: dict[str, bytes] = {}
_TEXT_KEYS_MAX = 4096


def _head(major: int, n: int) -> bytes:
    """The shortest head for ``major`` with argument ``n`` (RFC 8949 s4.2.1 rule 1)."""
    if n < _MIN_2BYTES:
        return _SHORT_HEADS[major][n]
    mt = major << 5
    if n < _MIN_4BYTES:
        return bytes((mt | _AI_2BYTES,)) + n.to_bytes(2, "big")
    if n < _MIN_8BYTES:
        return bytes((mt | _AI_4BYTES,)) + n.to_bytes(4, "big")
    return bytes((mt | _AI_8BYTES,)) + n.to_bytes(8, "big")


def _encode_int(value: int, out: list[bytes]) -> None:
    if value >= 0:
        if value >= _UINT_LIMIT:
            raise ValueError(f"integer {value} does not fit CBOR major type 0 (max 2**64-1)")
        out.append(_head(_MT_UINT, value))
    else:
        n = -1 - value
        if n >= _UINT_LIMIT:
            raise ValueError(f"integer {value} does not fit CBOR major type 1 (min -2**64)")
        out.append(_head(_MT_NINT, n))


def _encode_text(value: str, out: list[bytes]) -> None:
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"text contains a lone surrogate at index {exc.start}; CBOR text must be UTF-8"
        ) from exc
    out.append(_head(_MT_TEXT, len(raw)))
    out.append(raw)


def _encode_key(key: object) -> bytes:
    if key is None or isinstance(key, bool | int | str | bytes | bytearray | memoryview):
        out: list[bytes] = []
        _encode(key, out, 0)
        return b"".join(out)
    raise TypeError(
        f"map key of type {type(key).__name__} is not allowed; "
        "keys must be int, str, bytes, bool or None"
    )


def _encode_map(obj: Mapping[object, object], out: list[bytes], depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise ValueError(f"nesting deeper than {MAX_DEPTH} arrays/maps (or a cycle)")
    pairs: list[tuple[bytes, object]] = []
    for key, value in obj.items():
        if type(key) is str:
            key_bytes = _TEXT_KEYS.get(key)
            if key_bytes is None:
                key_bytes = _encode_key(key)
                if len(_TEXT_KEYS) < _TEXT_KEYS_MAX:
                    _TEXT_KEYS[key] = key_bytes
        else:
            key_bytes = _encode_key(key)
        pairs.append((key_bytes, value))
    # RFC 8949 s4.2.1 rule 3: sort by the bytewise order of the encoded keys.
    pairs.sort(key=itemgetter(0))
    out.append(_head(_MT_MAP, len(pairs)))
    previous = None
    for key_bytes, value in pairs:
        if key_bytes == previous:
            raise ValueError(f"two map keys encode to the same bytes {key_bytes.hex()}")
        previous = key_bytes
        out.append(key_bytes)
        _encode(value, out, depth + 1)


def _encode(obj: object, out: list[bytes], depth: int) -> None:  # noqa: C901, PLR0912
    # Exact-type checks first: they are the common case and the cheapest.
    tp = type(obj)
    if tp is str:
        _encode_text(obj, out)  # type: ignore[arg-type]
    elif tp is int:
        _encode_int(obj, out)  # type: ignore[arg-type]
    elif tp is bytes:
        out.append(_head(_MT_BYTES, len(obj)))  # type: ignore[arg-type]
        out.append(obj)  # type: ignore[arg-type]
    elif obj is None:
        out.append(b"\xf6")
    elif obj is True:
        out.append(b"\xf5")
    elif obj is False:
        out.append(b"\xf4")
    elif isinstance(obj, bytes | bytearray | memoryview):
        raw = bytes(obj)
        out.append(_head(_MT_BYTES, len(raw)))
        out.append(raw)
    elif isinstance(obj, str):  # str subclasses such as StrEnum members
        _encode_text(str(obj), out)
    elif isinstance(obj, float):
        raise TypeError(f"float {obj!r} cannot be encoded: canonical CBOR here has no floats")
    elif isinstance(obj, int):  # IntEnum and other int subclasses
        _encode_int(int(obj), out)
    elif isinstance(obj, list | tuple):
        if depth >= MAX_DEPTH:
            raise ValueError(f"nesting deeper than {MAX_DEPTH} arrays/maps (or a cycle)")
        out.append(_head(_MT_ARRAY, len(obj)))
        for item in obj:
            _encode(item, out, depth + 1)
    elif isinstance(obj, Mapping):
        _encode_map(obj, out, depth)
    else:
        raise TypeError(f"cannot encode {type(obj).__name__} as canonical CBOR")


def encode_canonical(obj: object) -> bytes:
    """Encode ``obj`` in RFC 8949 core deterministic form.

    Accepts ``None``, ``bool``, ``int`` (``-2**64 .. 2**64-1``), ``bytes``
    (and ``bytearray``/``memoryview``), ``str``, ``list``/``tuple`` and
    mappings keyed by ``None``/``bool``/``int``/``str``/``bytes``. The same
    value always yields the same bytes.

    Raises:
        TypeError: a float or another unsupported type, anywhere in ``obj``.
        ValueError: an integer out of range, a lone surrogate in text, nesting
            deeper than ``MAX_DEPTH`` (cyclic structures end up here too).
    """
    out: list[bytes] = []
    _encode(obj, out, 0)
    return b"".join(out)


# --------------------------------------------------------------------------- decoding


def _fail(offset: int, message: str) -> NonCanonicalCborError:
    return NonCanonicalCborError(f"non-canonical CBOR at byte {offset}: {message}", offset=offset)


def _simple_value_error(offset: int, ai: int) -> NonCanonicalCborError:
    if ai == 23:  # noqa: PLR2004 - RFC 8949 s3.3: simple value 23
        return _fail(offset, "'undefined' (0xf7) is not allowed; use null")
    if ai < _AI_1BYTE:
        return _fail(offset, f"simple value {ai} is not allowed; only false, true and null")
    if ai == _AI_1BYTE:
        return _fail(offset, "simple values (0xf8) are not allowed; only false, true and null")
    if ai <= _AI_8BYTES:
        width = {25: "half", 26: "single", 27: "double"}[ai]
        return _fail(offset, f"floats are not allowed ({width}-precision float)")
    if ai == _AI_INDEFINITE:
        return _fail(offset, "unexpected 'break' (0xff) outside an indefinite-length item")
    return _fail(offset, f"reserved additional information {ai} in initial byte 0xff")


def _read_argument(data: bytes, pos: int, end: int, major: int, ai: int) -> tuple[int, int]:
    """Return the argument of the head at ``pos - 1`` and the offset after it.

    ``ai`` is 24..31 (the short forms are handled by the caller).
    """
    start = pos - 1
    if ai == _AI_1BYTE:
        width, minimum = 1, _AI_1BYTE
    elif ai == _AI_2BYTES:
        width, minimum = 2, _MIN_2BYTES
    elif ai == _AI_4BYTES:
        width, minimum = 4, _MIN_4BYTES
    elif ai == _AI_8BYTES:
        width, minimum = 8, _MIN_8BYTES
    elif ai == _AI_INDEFINITE:
        what = _MAJOR_NAMES[major]
        if major in (_MT_BYTES, _MT_TEXT, _MT_ARRAY, _MT_MAP):
            raise _fail(start, f"indefinite-length {what} is not allowed")
        raise _fail(start, f"additional information 31 is invalid for a {what}")
    else:
        raise _fail(start, f"reserved additional information {ai} in initial byte")
    if pos + width > end:
        raise _fail(start, f"truncated: the head needs {width} more byte(s)")
    value = int.from_bytes(data[pos : pos + width], "big")
    if value < minimum:
        raise _fail(
            start,
            f"non-shortest head: argument {value} uses {width + 1} bytes "
            f"(RFC 8949 s4.2.1 requires the shortest form)",
        )
    return value, pos + width


def _decode_item(  # noqa: C901, PLR0911, PLR0912, PLR0915
    data: bytes, pos: int, end: int, depth: int
) -> tuple[Any, int]:
    """Decode one item starting at ``pos``; return it and the offset after it."""
    if pos >= end:
        raise _fail(pos, "truncated: expected another item")
    start = pos
    ib = data[pos]
    pos += 1
    major = ib >> 5
    ai = ib & 0x1F

    if major == _MT_SIMPLE:
        if ib == _NULL:
            return None, pos
        if ib == _TRUE:
            return True, pos
        if ib == _FALSE:
            return False, pos
        raise _simple_value_error(start, ai)
    if major == _MT_TAG:
        if ai <= _AI_8BYTES:
            raise _fail(start, "tags are not allowed")
        raise _fail(start, f"reserved or invalid additional information {ai} for a tag")

    if ai < _AI_1BYTE:
        arg = ai
    elif ai == _AI_1BYTE and pos < end:  # inlined: the most common long head
        arg = data[pos]
        if arg < _AI_1BYTE:
            raise _fail(start, f"non-shortest head: argument {arg} uses 2 bytes")
        pos += 1
    else:
        arg, pos = _read_argument(data, pos, end, major, ai)

    if major == _MT_TEXT:
        stop = pos + arg
        if stop > end:
            raise _fail(start, f"truncated: text string declares {arg} bytes, {end - pos} remain")
        try:
            return data[pos:stop].decode("utf-8"), stop
        except UnicodeDecodeError as exc:
            raise _fail(pos + exc.start, f"invalid UTF-8 in text string ({exc.reason})") from exc
    if major == _MT_BYTES:
        stop = pos + arg
        if stop > end:
            raise _fail(start, f"truncated: byte string declares {arg} bytes, {end - pos} remain")
        return data[pos:stop], stop
    if major == _MT_UINT:
        return arg, pos
    if major == _MT_NINT:
        return -1 - arg, pos

    if depth >= MAX_DEPTH:
        raise _fail(start, f"nesting deeper than {MAX_DEPTH} arrays/maps")
    if major == _MT_ARRAY:
        # Every item takes at least one byte: refuse impossible counts before looping.
        if arg > end - pos:
            raise _fail(start, f"truncated: array declares {arg} items, {end - pos} bytes remain")
        items: list[Any] = []
        append = items.append
        for _ in range(arg):
            item, pos = _decode_item(data, pos, end, depth + 1)
            append(item)
        return items, pos

    # What remains is a map (major type 5).
    if 2 * arg > end - pos:
        raise _fail(start, f"truncated: map declares {arg} pairs, {end - pos} bytes remain")
    result: dict[Any, Any] = {}
    previous = b""
    for index in range(arg):
        key_start = pos
        key_ib = data[pos] if pos < end else -1
        if key_ib >> 5 in (_MT_ARRAY, _MT_MAP):
            raise _fail(pos, "map keys must be integers, strings, bytes, booleans or null")
        key, pos = _decode_item(data, pos, end, depth + 1)
        key_bytes = data[key_start:pos]
        # RFC 8949 s4.2.1 rule 3: keys in bytewise lexicographic order of their
        # encodings; equal encodings are duplicate keys (s5.6).
        if index and key_bytes <= previous:
            if key_bytes == previous:
                raise _fail(key_start, f"duplicate map key {key!r}")
            raise _fail(
                key_start,
                f"map keys out of order: {key!r} (0x{key_bytes.hex()}) sorts before "
                f"the previous key (0x{previous.hex()})",
            )
        if key in result:
            # Distinct CBOR keys that Python folds together: 1 and true, 0 and false.
            raise _fail(key_start, f"map key {key!r} collides with an earlier key in Python")
        previous = key_bytes
        value, pos = _decode_item(data, pos, end, depth + 1)
        result[key] = value
    return result, pos


def decode_canonical(data: bytes | bytearray | memoryview) -> Any:
    """Decode exactly one CBOR item that is in RFC 8949 core deterministic form.

    Returns ``None``, ``bool``, ``int``, ``bytes``, ``str``, ``list`` or
    ``dict`` (nested). Never re-encodes or repairs: input that is not byte
    for byte what ``encode_canonical`` produces for its value is refused.

    Raises:
        NonCanonicalCborError: the input is truncated, has trailing bytes, or
            uses indefinite lengths, non-shortest heads, unsorted or duplicate
            map keys, floats, tags, ``undefined`` or other simple values,
            reserved additional information, invalid UTF-8, or nests deeper
            than ``MAX_DEPTH``. The message and ``detail["offset"]`` name the
            first offending byte.
    """
    raw = bytes(data)
    end = len(raw)
    if not end:
        raise _fail(0, "empty input")
    value, pos = _decode_item(raw, 0, end, 0)
    if pos != end:
        raise _fail(pos, f"{end - pos} trailing byte(s) after the item")
    return value


def decode_trusted(data: bytes) -> Any:
    """Decode CBOR this code encoded itself, without proving it canonical (cbor2's C decoder).

    For the event log's payloads when they are folded into views: only
    ``encode_canonical`` wrote them and the hash chain covers their bytes, so
    the strict decoder (4-8x slower) would catch nothing ``events verify``
    does not. Never for input from outside.

    Raises:
        ValueError: the bytes are not one well-formed CBOR item.
    """
    try:
        return cbor2.loads(data)
    except cbor2.CBORError as exc:
        raise ValueError(f"undecodable CBOR: {exc}") from exc
