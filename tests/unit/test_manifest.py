"""Manifests (DESIGN section 3): typed values, canonical CBOR and JSON forms, validation."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifactstore.cbor import decode_canonical, encode_canonical
from artifactstore.digests import Digest, hash_bytes
from artifactstore.errors import ManifestError, NonCanonicalCborError
from artifactstore.manifest import (
    DEFAULT_MEDIA_TYPE,
    MANIFEST_SCHEMA,
    MAX_ANNOTATIONS,
    Manifest,
    ManifestFile,
    build_manifest,
    decode_manifest,
    encode_manifest,
    manifest_from_json,
    manifest_to_json,
)
from artifactstore.names import PACKAGE_NAME_PATTERN, VERSION_PATTERN

if TYPE_CHECKING:
    from collections.abc import Iterator

HELLO = hash_bytes(b"hello\n")
EMPTY = hash_bytes(b"")


def demo_manifest() -> Manifest:
    return build_manifest(
        "demo",
        "1.0.0",
        [
            ManifestFile("dist/app.tar.gz", 6, HELLO.sha256, HELLO.blake3, "application/gzip"),
            ManifestFile("README", 0, EMPTY.sha256, EMPTY.blake3),
        ],
        {"producer": "ci"},
    )


# The exact bytes of demo_manifest(): pinned, because their sha256 is the version's identity.
DEMO_HEX = (
    "a56566696c657382a5647061746866524541444d456473697a650066626c616b65335820af1349b9"
    "f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262667368613235365820e3b0c4"
    "4298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8556a6d656469615f74797065"
    "78186170706c69636174696f6e2f6f637465742d73747265616da564706174686f646973742f6170"
    "702e7461722e677a6473697a650666626c616b653358208e4c7c1b99dbfd50e7a95185fead5ee144"
    "8fa904a2fdd778eaf5f2dbfd629a996673686132353658205891b5b522d5df086d0ff0b110fbd9d2"
    "1bb4fc7163af34d08286a2e846f6be036a6d656469615f74797065706170706c69636174696f6e2f"
    "677a697066736368656d617819617274696661637473746f72652e6d616e69666573742f76316770"
    "61636b6167656464656d6f6776657273696f6e65312e302e306b616e6e6f746174696f6e73a16870"
    "726f6475636572626369"
)
DEMO_SHA256 = "059d32c7f06f77a38735b543991fe34e1894d4c898f8b9bd5e6b9a68e79c2cf0"


def demo_document() -> dict[str, Any]:
    """The decoded CBOR document of demo_manifest(), for building bad variants."""
    document: dict[str, Any] = decode_canonical(bytes.fromhex(DEMO_HEX))
    return document


def test_encoding_of_a_fixed_manifest_is_pinned() -> None:
    """The demo manifest encodes to the same bytes, and so the same sha256, forever."""
    data = encode_manifest(demo_manifest())
    assert data.hex() == DEMO_HEX
    assert hashlib.sha256(data).hexdigest() == DEMO_SHA256
    assert decode_manifest(data) == demo_manifest()


def test_document_shape_follows_design_section_3() -> None:
    """Top-level keys, per-file keys and raw 32-byte digests are as DESIGN section 3 draws them."""
    document = demo_document()
    assert document["schema"] == MANIFEST_SCHEMA
    assert set(document) == {"schema", "package", "version", "files", "annotations"}
    first = document["files"][0]
    assert set(first) == {"path", "size", "sha256", "blake3", "media_type"}
    assert first["sha256"] == EMPTY.sha256.raw
    assert first["media_type"] == DEFAULT_MEDIA_TYPE
    assert document["annotations"] == {"producer": "ci"}


def test_empty_annotations_are_omitted_from_the_encoding() -> None:
    """A manifest without annotations has no "annotations" key at all."""
    manifest = build_manifest("demo", "1", demo_manifest().files)
    assert "annotations" not in decode_canonical(encode_manifest(manifest))


def test_helpers_find_files_and_expose_annotations() -> None:
    """find_file bisects by path; annotations_dict and total_size summarise the manifest."""
    manifest = demo_manifest()
    found = manifest.find_file("dist/app.tar.gz")
    assert found is not None
    assert found.sha256 == HELLO.sha256
    assert manifest.find_file("dist") is None
    assert manifest.find_file("zzz") is None
    assert manifest.annotations_dict == {"producer": "ci"}
    assert manifest.total_size == 6


def bad(mutate: Any) -> bytes:
    document = demo_document()
    mutate(document)
    return encode_canonical(document)


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def mutate(document: dict[str, Any]) -> None:
        target: Any = document
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return mutate


def _delete(path: tuple[Any, ...]) -> Any:
    def mutate(document: dict[str, Any]) -> None:
        target: Any = document
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]

    return mutate


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_set(("schema",), "artifactstore.manifest/v2"), r"^schema: unsupported"),
        (_delete(("schema",)), r"^manifest: missing key\(s\) schema"),
        (_set(("extra",), 1), r"^manifest: unknown key\(s\) 'extra'"),
        (_set((1,), 1), r"^manifest: unknown key\(s\) 1"),
        (_set(("package",), "Demo"), r"^package 'Demo': must start"),
        (_set(("package",), 7), r"^package: must be text"),
        (_set(("version",), "1.0 beta"), r"^version '1.0 beta': character ' '"),
        (_set(("files",), {}), r"^files: must be an array"),
        (_set(("files",), []), r"^files: a manifest names at least one file"),
        (_set(("files", 1), "x"), r"^files\[1\]: must be a map"),
        (_set(("files", 1, "mode"), 420), r"^files\[1\]: unknown key\(s\) 'mode'"),
        (_delete(("files", 0, "media_type")), r"^files\[0\]: missing key\(s\) media_type"),
        (
            _set(("files", 1, "path"), "dist/../app"),
            r"^files\[1\]\.path: segment '\.\.' not allowed",
        ),
        (_set(("files", 1, "path"), "/abs"), r"^files\[1\]\.path: must be relative"),
        (_set(("files", 1, "size"), -1), r"^files\[1\]\.size: must be between 0"),
        (_set(("files", 1, "size"), value=True), r"^files\[1\]\.size: must be an integer"),
        (_set(("files", 1, "size"), "6"), r"^files\[1\]\.size: must be an integer"),
        (_set(("files", 1, "sha256"), b"\x00" * 31), r"^files\[1\]\.sha256: .*got 31 bytes"),
        (_set(("files", 1, "blake3"), b"\x00" * 33), r"^files\[1\]\.blake3: .*got 33 bytes"),
        (_set(("files", 1, "sha256"), HELLO.sha256.hex), r"^files\[1\]\.sha256: .*got str"),
        (_set(("files", 1, "media_type"), ""), r"^files\[1\]\.media_type: must not be empty"),
        (_set(("files", 1, "media_type"), "gzip"), r"^files\[1\]\.media_type: .*type/subtype"),
        (_set(("files", 1, "media_type"), None), r"^files\[1\]\.media_type: must be text"),
        (_set(("files", 1, "path"), "README"), r"^files\[1\]\.path: duplicate path 'README'"),
        (_set(("files", 1, "path"), "AAA"), r"^files\[1\]\.path: 'AAA' sorts before"),
        (_set(("files", 1, "path"), "README/x"), r"^files\[1\]\.path: 'README/x' lies under"),
        (_set(("annotations",), {}), r"^annotations: an empty map must be omitted"),
        (_set(("annotations",), []), r"^annotations: must be a map"),
        (_set(("annotations",), {"k": 1}), r"^annotations\['k'\]: value must be text"),
        (_set(("annotations",), {1: "v"}), r"^annotations: keys must be text"),
        (_set(("annotations",), {"": "v"}), r"^annotations\[''\]: key must not be empty"),
        (_set(("annotations",), {"a\x01": "v"}), r"control character"),
    ],
)
def test_schema_violations_are_refused_naming_the_field(mutate: Any, message: str) -> None:
    """Each break of the DESIGN section 3 schema raises a ManifestError naming the field."""
    data = bad(mutate)
    with pytest.raises(ManifestError, match=message) as info:
        decode_manifest(data)
    assert not isinstance(info.value, NonCanonicalCborError)
    assert info.value.code == "invalid_manifest"


@pytest.mark.parametrize("top", [[1, 2], "manifest", 7, None])
def test_a_top_level_item_other_than_a_map_is_refused(top: object) -> None:
    """Only a map can be a manifest."""
    with pytest.raises(ManifestError, match=r"^manifest: must be a map"):
        decode_manifest(encode_canonical(top))


def test_non_canonical_bytes_are_refused_not_repaired() -> None:
    """A manifest written with its map keys in insertion order fails as non-canonical CBOR."""
    import cbor2  # noqa: PLC0415 - only this test compares with cbor2

    document = demo_document()
    # With text keys only, length-first order equals bytewise order: cbor2 agrees with us.
    assert cbor2.dumps(document, canonical=True) == bytes.fromhex(DEMO_HEX)
    shuffled = dict(reversed(document.items()))
    with pytest.raises(NonCanonicalCborError, match="out of order"):
        decode_manifest(cbor2.dumps(shuffled))


# --------------------------------------------------------------------------- construction


def test_invalid_files_cannot_be_constructed_by_code() -> None:
    """ManifestFile validates path, size, digest algorithms and media type when built."""
    with pytest.raises(ManifestError, match=r"^path: segment '\.\.' not allowed"):
        ManifestFile("../x", 1, HELLO.sha256, HELLO.blake3)
    with pytest.raises(ManifestError, match=r"^size"):
        ManifestFile("x", -5, HELLO.sha256, HELLO.blake3)
    with pytest.raises(ManifestError, match=r"^size"):
        ManifestFile("x", 2**64, HELLO.sha256, HELLO.blake3)
    with pytest.raises(ManifestError, match=r"^sha256: must be a sha256 digest"):
        ManifestFile("x", 1, HELLO.blake3, HELLO.blake3)
    with pytest.raises(ManifestError, match=r"^blake3: must be a Digest"):
        ManifestFile("x", 1, HELLO.sha256, HELLO.blake3.hex)  # type: ignore[arg-type]
    with pytest.raises(ManifestError, match=r"^media_type"):
        ManifestFile("x", 1, HELLO.sha256, HELLO.blake3, "text/plain\n")


def test_invalid_manifests_cannot_be_constructed_by_code() -> None:
    """Manifest refuses unsorted or duplicate files, bad names and unsorted annotations."""
    a = ManifestFile("a", 1, HELLO.sha256, HELLO.blake3)
    b = ManifestFile("b", 1, HELLO.sha256, HELLO.blake3)
    with pytest.raises(ManifestError, match=r"^files\[1\]\.path: 'a' sorts before"):
        Manifest("demo", "1", (b, a))
    with pytest.raises(ManifestError, match=r"^files\[1\]\.path: duplicate"):
        Manifest("demo", "1", (a, a))
    with pytest.raises(ManifestError, match=r"^files: must be a tuple"):
        Manifest("demo", "1", [a])  # type: ignore[arg-type]
    with pytest.raises(ManifestError, match=r"^package"):
        Manifest("Demo", "1", (a,))
    with pytest.raises(ManifestError, match=r"^version"):
        Manifest("demo", "", (a,))
    with pytest.raises(ManifestError, match="must be sorted by key"):
        Manifest("demo", "1", (a,), (("z", "1"), ("a", "2")))
    with pytest.raises(ManifestError, match="duplicate key"):
        Manifest("demo", "1", (a,), (("a", "1"), ("a", "2")))
    with pytest.raises(ManifestError, match="at most"):
        build_manifest("demo", "1", [a], {str(i): "" for i in range(MAX_ANNOTATIONS + 1)})


def test_build_manifest_sorts_files_by_utf8_bytes_and_annotations_by_key() -> None:
    """build_manifest orders files by the UTF-8 bytes of their paths, whatever the input order."""
    paths = ["\u00e9", "z", "Z", "a/b", "a-b", "\U0001f600", "\uffff"]
    files = [ManifestFile(p, 1, HELLO.sha256, HELLO.blake3) for p in paths]
    manifest = build_manifest("demo", "1", files, {"b": "2", "a": "1"})
    assert [f.path for f in manifest.files] == sorted(paths, key=lambda p: p.encode())
    assert manifest.annotations == (("a", "1"), ("b", "2"))


# --------------------------------------------------------------------------- JSON


def demo_json() -> dict[str, Any]:
    return manifest_to_json(demo_manifest())


def test_json_form_uses_prefixed_hex_digests() -> None:
    """manifest_to_json spells digests as sha256:<hex> and blake3:<hex> and round-trips."""
    document = demo_json()
    assert document["files"][1]["sha256"] == f"sha256:{HELLO.sha256.hex}"
    assert document["files"][1]["blake3"] == f"blake3:{HELLO.blake3.hex}"
    assert document["annotations"] == {"producer": "ci"}
    assert manifest_from_json(document) == demo_manifest()


def test_json_accepts_bare_hex_any_order_and_defaults() -> None:
    """Bare hex digests, unsorted files, no schema and no media_type are accepted from people."""
    document = demo_json()
    del document["schema"]
    document["files"].reverse()
    for entry in document["files"]:
        entry["sha256"] = entry["sha256"].removeprefix("sha256:")
        entry["blake3"] = entry["blake3"].removeprefix("blake3:")
    del document["files"][1]["media_type"]  # README, default media type
    assert manifest_from_json(document) == demo_manifest()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_set(("schema",), "other"), r"^schema: unsupported"),
        (_set(("color",), "red"), r"^manifest: unknown key"),
        (_delete(("files",)), r"^manifest: missing key\(s\) files"),
        (
            _set(("files", 0, "sha256"), f"blake3:{HELLO.blake3.hex}"),
            r"^files\[0\]\.sha256: expected a sha256",
        ),
        (
            _set(("files", 0, "sha256"), HELLO.sha256.hex.upper()),
            r"^files\[0\]\.sha256: .*lowercase hex",
        ),
        (_set(("files", 0, "blake3"), "blake3:abc"), r"^files\[0\]\.blake3"),
        (_set(("files", 0, "blake3"), None), r"^files\[0\]\.blake3: must be text"),
        (_set(("files", 0, "size"), 6.0), r"^files\[0\]\.size: must be an integer, got float"),
        (
            _set(("files", 0, "size"), value=False),
            r"^files\[0\]\.size: must be an integer, got bool",
        ),
        (_set(("files", 0, "path"), "a\\b"), r"^files\[0\]\.path: backslash"),
        (
            _set(("files", 0, "path"), "dist/app.tar.gz"),
            r"^files\[1\]\.path: duplicate path 'dist/app.tar.gz' \(also files\[0\]\)",
        ),
        (
            _set(("files", 1, "path"), "README/x"),
            r"^files\[1\]\.path: 'README/x' lies under 'README'",
        ),
        (_set(("annotations",), {"k": 5}), r"^annotations\['k'\]: value must be text"),
        (_set(("annotations",), ["k"]), r"^annotations: must be a map"),
    ],
)
def test_json_errors_name_the_field_as_sent(mutate: Any, message: str) -> None:
    """Bad JSON manifests raise ManifestError naming the field, with file indices as sent."""
    document = demo_json()
    mutate(document)
    with pytest.raises(ManifestError, match=message):
        manifest_from_json(document)


def test_json_accepts_empty_or_null_annotations() -> None:
    """In JSON, annotations may be {} or null, meaning none."""
    values: tuple[dict[str, str] | None, ...] = ({}, None)
    for value in values:
        document = demo_json()
        document["annotations"] = value
        assert manifest_from_json(document).annotations == ()


def test_json_top_level_must_be_an_object() -> None:
    """A JSON array or string is not a manifest."""
    with pytest.raises(ManifestError, match=r"^manifest: must be a map/object"):
        manifest_from_json([demo_json()])


# --------------------------------------------------------------------------- properties


segment = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\\x85"),
    min_size=1,
    max_size=8,
).filter(lambda s: s not in {".", ".."})
paths = st.lists(segment, min_size=1, max_size=3).map("/".join)
digests = st.binary(min_size=32, max_size=32)
media_types = st.sampled_from(
    [DEFAULT_MEDIA_TYPE, "application/gzip", "text/plain; charset=utf-8", "image/svg+xml"]
)


@st.composite
def manifest_files(draw: st.DrawFn) -> list[ManifestFile]:
    chosen = draw(st.lists(paths, min_size=1, max_size=8, unique=True))
    # Drop any path that lies under another chosen path (a file cannot be a directory).
    known = set(chosen)
    kept = [
        p
        for p in chosen
        if not any("/".join(p.split("/")[:i]) in known for i in range(1, p.count("/") + 1))
    ]
    return [
        ManifestFile(
            p,
            draw(st.integers(min_value=0, max_value=2**64 - 1)),
            Digest("sha256", draw(digests)),
            Digest("blake3", draw(digests)),
            draw(media_types),
        )
        for p in kept
    ]


annotation_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=10
)
manifests = st.builds(
    build_manifest,
    st.from_regex(PACKAGE_NAME_PATTERN, fullmatch=True),
    st.from_regex(VERSION_PATTERN, fullmatch=True),
    manifest_files(),
    st.dictionaries(
        annotation_text,
        st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
        max_size=4,
    ),
)


@settings(max_examples=200, deadline=None)
@given(manifests)
def test_decode_inverts_encode_and_bytes_are_stable(manifest: Manifest) -> None:
    """decode_manifest(encode_manifest(m)) == m, and re-encoding gives identical bytes."""
    data = encode_manifest(manifest)
    decoded = decode_manifest(data)
    assert decoded == manifest
    assert encode_manifest(decoded) == data


@settings(max_examples=200, deadline=None)
@given(manifests, st.randoms(use_true_random=False))
def test_json_round_trip_ignores_file_order(manifest: Manifest, rng: Any) -> None:
    """manifest_from_json(manifest_to_json(m)) == m, however the JSON files are shuffled."""
    document = manifest_to_json(manifest)
    rng.shuffle(document["files"])
    assert manifest_from_json(document) == manifest


@settings(max_examples=200, deadline=None)
@given(manifests, st.data())
def test_reordered_files_are_refused(manifest: Manifest, data: st.DataObject) -> None:
    """Swapping any two files of an encoded manifest makes decode_manifest refuse it."""
    if len(manifest.files) < 2:
        return
    i, j = data.draw(
        st.lists(st.integers(0, len(manifest.files) - 1), min_size=2, max_size=2, unique=True)
    )
    document = decode_canonical(encode_manifest(manifest))
    files = document["files"]
    files[i], files[j] = files[j], files[i]
    with pytest.raises(ManifestError, match=r"sorts before"):
        decode_manifest(encode_canonical(document))


def _heads(item: Any) -> Iterator[tuple[int, int, bytes]]:
    """(major type, argument, bytes after the head) of every head, in canonical order."""
    if isinstance(item, int):
        yield (0, item, b"") if item >= 0 else (1, -1 - item, b"")
    elif isinstance(item, bytes):
        yield 2, len(item), item
    elif isinstance(item, str):
        yield 3, len(item.encode()), item.encode()
    elif isinstance(item, list):
        yield 4, len(item), b""
        for child in item:
            yield from _heads(child)
    else:
        yield 5, len(item), b""
        for key in sorted(item, key=encode_canonical):
            yield from _heads(key)
            yield from _heads(item[key])


def widened(value: Any, target: int) -> tuple[bytes, int, int]:
    """Encode ``value`` canonically except that head number ``target`` is one size too long.

    Returns the bytes, the offset of the widened head (-1 if it could not be
    widened) and the number of heads seen.
    """
    out = bytearray()
    where = -1
    count = 0
    for count, (major, n, payload) in enumerate(_heads(value), start=1):
        if count - 1 == target and n < 2**32:
            where = len(out)
            out.extend(_one_size_up(major << 5, n))
        else:
            out.extend(_shortest(major << 5, n))
        out.extend(payload)
    return bytes(out), where, count


_FORMS = ((24, 1), (25, 2), (26, 4), (27, 8))  # (additional information, argument bytes)


def _shortest(mt: int, n: int) -> bytes:
    if n < 24:
        return bytes([mt | n])
    ai, width = next(form for form in _FORMS if n < 2 ** (8 * form[1]))
    return bytes([mt | ai]) + n.to_bytes(width, "big")


def _one_size_up(mt: int, n: int) -> bytes:
    if n < 24:
        return bytes([mt | 24, n])
    index = next(i for i, form in enumerate(_FORMS) if n < 2 ** (8 * form[1]))
    ai, width = _FORMS[index + 1]
    return bytes([mt | ai]) + n.to_bytes(width, "big")


@settings(max_examples=200, deadline=None)
@given(manifests, st.data())
def test_any_non_shortest_head_is_refused(manifest: Manifest, data: st.DataObject) -> None:
    """Lengthening any one integer or length head of an encoded manifest is refused there."""
    canonical = encode_manifest(manifest)
    document = decode_canonical(canonical)
    plain, _, heads = widened(document, -1)
    assert plain == canonical
    target = data.draw(st.integers(0, heads - 1))
    variant, offset, _ = widened(document, target)
    if offset < 0:
        return  # an argument of 2**32 or more has no longer form
    with pytest.raises(NonCanonicalCborError, match="non-shortest") as info:
        decode_manifest(variant)
    assert info.value.detail["offset"] == offset
