"""Manifests: the typed value, its canonical CBOR form and its JSON form.

This module owns the manifest schema of DESIGN section 3
(``artifactstore.manifest/v1``): which keys exist, what each value may be,
and that files are unique and sorted by path. A ``Manifest`` value is valid
by construction, so ``encode_manifest`` cannot produce a document that
``decode_manifest`` would refuse, and every valid manifest has exactly one
byte form: ``encode_manifest(decode_manifest(b)) == b``. The sha256 of those
bytes is the version's identity.

The CBOR path is strict: bytes that are not RFC 8949 core deterministic CBOR
(see ``cbor.py``), or that carry unknown keys, an empty annotations map, or
files out of order, are refused, never repaired. The JSON path
(``manifest_from_json``) is the forgiving entry for people: files in any
order, digests as bare hex or ``alg:hex``, ``media_type`` and ``schema``
optional.

It does not check that the named blobs exist or that sizes match them: that
is the registry's publish use case. Name syntax lives in ``names.py``.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from artifactstore.cbor import decode_canonical, decode_trusted, encode_canonical
from artifactstore.digests import Algorithm, Digest
from artifactstore.errors import InvalidDigestError, InvalidNameError, ManifestError
from artifactstore.names import validate_file_path, validate_package_name, validate_version

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "DEFAULT_MEDIA_TYPE",
    "MANIFEST_SCHEMA",
    "MAX_ANNOTATIONS",
    "MAX_ANNOTATION_KEY_BYTES",
    "MAX_ANNOTATION_VALUE_BYTES",
    "MAX_MEDIA_TYPE_CHARS",
    "Manifest",
    "ManifestFile",
    "build_manifest",
    "decode_manifest",
    "encode_manifest",
    "manifest_from_json",
    "manifest_to_json",
    "trusted_file_entries",
]

MANIFEST_SCHEMA = "artifactstore.manifest/v1"
DEFAULT_MEDIA_TYPE = "application/octet-stream"
MAX_MEDIA_TYPE_CHARS = 255
MAX_ANNOTATIONS = 256
MAX_ANNOTATION_KEY_BYTES = 256
MAX_ANNOTATION_VALUE_BYTES = 8192
_MAX_SIZE = (1 << 64) - 1  # CBOR major type 0

_TOP_REQUIRED = frozenset({"schema", "package", "version", "files"})
_TOP_ALLOWED = _TOP_REQUIRED | {"annotations"}
_FILE_KEYS = frozenset({"path", "size", "sha256", "blake3", "media_type"})
_JSON_TOP_REQUIRED = frozenset({"package", "version", "files"})
_JSON_FILE_REQUIRED = frozenset({"path", "size", "sha256", "blake3"})

# type "/" subtype [; parameters], with RFC 9110 section 5.6.2 tokens.
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE_RE = re.compile(rf"{_TCHARS}/{_TCHARS}(?:[ \t]*;[\x20-\x7e]*)?")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _error(field: str, reason: str) -> ManifestError:
    return ManifestError(f"{field}: {reason}", field=field)


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _prefixed(exc: ManifestError, prefix: str) -> ManifestError:
    """The same error with ``prefix`` (e.g. ``files[3].``) before its field."""
    field = f"{prefix}{exc.detail.get('field', '')}"
    return ManifestError(f"{prefix}{exc.message}", **{**exc.detail, "field": field})


def _check_text_utf8(value: str, field: str) -> int:
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise _error(field, f"not valid UTF-8 (lone surrogate at index {exc.start})") from exc


@dataclass(frozen=True, slots=True)
class ManifestFile:
    """One file of a package version: where it goes and which blob it is.

    Validated on construction: ``path`` per ``names.validate_file_path``,
    ``size`` an int in ``0 .. 2**64-1``, the two digests of the right
    algorithms, ``media_type`` a ``type/subtype[; params]`` of at most
    ``MAX_MEDIA_TYPE_CHARS`` printable ASCII characters.

    Raises:
        ManifestError: naming the field, e.g. ``path: segment '..' not allowed``.
    """

    path: str
    size: int
    sha256: Digest
    blake3: Digest
    media_type: str = DEFAULT_MEDIA_TYPE

    def __post_init__(self) -> None:
        try:
            validate_file_path(self.path)
        except InvalidNameError as exc:
            raise ManifestError(exc.message, field="path") from exc
        size = self.size
        if type(size) is not int:
            raise _error("size", f"must be an integer, got {_type_name(size)}")
        if not 0 <= size <= _MAX_SIZE:
            raise _error("size", f"must be between 0 and 2**64-1, got {size}")
        _check_digest(self.sha256, "sha256")
        _check_digest(self.blake3, "blake3")
        media_type = self.media_type
        if not isinstance(media_type, str):
            raise _error("media_type", f"must be text, got {_type_name(media_type)}")
        if not media_type:
            raise _error("media_type", "must not be empty")
        if len(media_type) > MAX_MEDIA_TYPE_CHARS:
            raise _error("media_type", f"longer than {MAX_MEDIA_TYPE_CHARS} characters")
        if not _MEDIA_TYPE_RE.fullmatch(media_type):
            raise _error(
                "media_type", f"{media_type!a} is not a media type of the form type/subtype"
            )


def _check_digest(value: object, algorithm: Algorithm) -> None:
    if not isinstance(value, Digest):
        raise _error(algorithm, f"must be a Digest, got {_type_name(value)}")
    if value.algorithm != algorithm:
        raise _error(algorithm, f"must be a {algorithm} digest, got {value.algorithm}")


def _check_paths(paths: Sequence[str], labels: Sequence[int]) -> None:
    """Require strictly increasing paths, and no file inside another file's path.

    ``labels[i]`` is the index to report for ``paths[i]``. Python orders
    ``str`` by code point, which for valid UTF-8 text is the bytewise order
    of the UTF-8 encodings (RFC 3629 section 1), as DESIGN section 3 asks.
    """
    for i in range(1, len(paths)):
        if paths[i] <= paths[i - 1]:
            here = f"files[{labels[i]}].path"
            if paths[i] == paths[i - 1]:
                raise _error(here, f"duplicate path {paths[i]!a} (also files[{labels[i - 1]}])")
            raise _error(
                here,
                f"{paths[i]!a} sorts before files[{labels[i - 1]}].path {paths[i - 1]!a}; "
                "files must be sorted by the UTF-8 bytes of their paths",
            )
    # A path that is also a directory of another path cannot be written out.
    known = set(paths)
    for i, path in enumerate(paths):
        slash = path.find("/")
        while slash != -1:
            parent = path[:slash]
            if parent in known:
                raise _error(
                    f"files[{labels[i]}].path",
                    f"{path!a} lies under {parent!a}, which is also a file",
                )
            slash = path.find("/", slash + 1)


def _check_annotation(index: int, pair: object) -> str:
    """Validate one (key, value) pair and return its key."""
    if not (isinstance(pair, tuple) and len(pair) == 2):  # noqa: PLR2004
        raise _error(f"annotations[{index}]", "must be a (key, value) pair")
    key, value = pair
    if not isinstance(key, str):
        raise _error(f"annotations[{index}]", f"key must be text, got {_type_name(key)}")
    field = f"annotations[{key[:64]!a}]"
    if not isinstance(value, str):
        raise _error(field, f"value must be text, got {_type_name(value)}")
    if not key:
        raise _error(field, "key must not be empty")
    if _check_text_utf8(key, field) > MAX_ANNOTATION_KEY_BYTES:
        raise _error(field, f"key longer than {MAX_ANNOTATION_KEY_BYTES} bytes")
    control = _CONTROL_RE.search(key)
    if control:
        raise _error(field, f"control character {control.group()!a} in key")
    if _check_text_utf8(value, field) > MAX_ANNOTATION_VALUE_BYTES:
        raise _error(field, f"value longer than {MAX_ANNOTATION_VALUE_BYTES} bytes")
    return key


def _check_annotations(annotations: Sequence[object]) -> None:
    if len(annotations) > MAX_ANNOTATIONS:
        raise _error("annotations", f"{len(annotations)} entries; at most {MAX_ANNOTATIONS}")
    previous: str | None = None
    for index, pair in enumerate(annotations):
        key = _check_annotation(index, pair)
        if previous is not None and key <= previous:
            field = f"annotations[{key[:64]!a}]"
            if key == previous:
                raise _error(field, "duplicate key")
            raise _error(field, "annotations must be sorted by key (use build_manifest)")
        previous = key


@dataclass(frozen=True, slots=True)
class Manifest:
    """The files of one package version, in canonical order (DESIGN section 3).

    ``files`` are sorted by path and unique; ``annotations`` are (key, value)
    pairs sorted by key and unique. Construction validates everything, so an
    invalid manifest cannot exist; ``build_manifest`` sorts for you.

    Raises:
        ManifestError: naming the offending field.
    """

    package: str
    version: str
    files: tuple[ManifestFile, ...]
    annotations: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for name, validate in (("package", validate_package_name), ("version", validate_version)):
            try:
                validate(getattr(self, name), field=name)
            except InvalidNameError as exc:
                raise ManifestError(exc.message, field=name) from exc
        if not isinstance(self.files, tuple):
            raise _error("files", f"must be a tuple, got {_type_name(self.files)}")
        if not self.files:
            raise _error("files", "a manifest names at least one file")
        for index, file in enumerate(self.files):
            if not isinstance(file, ManifestFile):
                raise _error(f"files[{index}]", f"must be a ManifestFile, got {_type_name(file)}")
        _check_paths([file.path for file in self.files], range(len(self.files)))
        if not isinstance(self.annotations, tuple):
            raise _error("annotations", f"must be a tuple, got {_type_name(self.annotations)}")
        _check_annotations(self.annotations)

    @property
    def annotations_dict(self) -> dict[str, str]:
        """The annotations as a new dict (sorted by key)."""
        return dict(self.annotations)

    @property
    def total_size(self) -> int:
        """The sum of the file sizes."""
        return sum(file.size for file in self.files)

    def find_file(self, path: str) -> ManifestFile | None:
        """The file at ``path`` (binary search), or ``None`` when there is none."""
        index = bisect_left(self.files, path, key=attrgetter("path"))
        if index < len(self.files) and self.files[index].path == path:
            return self.files[index]
        return None


def build_manifest(
    package: str,
    version: str,
    files: Iterable[ManifestFile],
    annotations: Mapping[str, str] | None = None,
) -> Manifest:
    """Build a ``Manifest`` from files in any order, sorting files and annotations.

    Raises:
        ManifestError: an invalid name, no files, a duplicate path, a path
            under another file's path, or a bad annotation.
    """
    ordered = tuple(sorted(files, key=attrgetter("path")))
    pairs = tuple(sorted((annotations or {}).items()))
    return Manifest(package=package, version=version, files=ordered, annotations=pairs)


# --------------------------------------------------------------------------- CBOR


def encode_manifest(manifest: Manifest) -> bytes:
    """The canonical CBOR bytes of ``manifest``; the same manifest gives the same bytes.

    ``annotations`` is omitted when empty and ``media_type`` is always present,
    so each manifest has exactly one encoding.
    """
    document: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA,
        "package": manifest.package,
        "version": manifest.version,
        "files": [
            {
                "path": file.path,
                "size": file.size,
                "sha256": file.sha256.raw,
                "blake3": file.blake3.raw,
                "media_type": file.media_type,
            }
            for file in manifest.files
        ],
    }
    if manifest.annotations:
        document["annotations"] = dict(manifest.annotations)
    return encode_canonical(document)


def _check_keys(
    document: Mapping[Any, Any],
    where: str,
    required: frozenset[str],
    allowed: frozenset[str],
) -> None:
    keys = document.keys()
    if keys <= allowed and required <= keys:
        return
    unknown = [key for key in keys if key not in allowed]
    if unknown:
        shown = ", ".join(ascii(key)[:80] for key in unknown)
        raise _error(where, f"unknown key(s) {shown}; allowed: {', '.join(sorted(allowed))}")
    missing = sorted(required - keys)
    if missing:
        raise _error(where, f"missing key(s) {', '.join(missing)}")


def _top_level(document: object, *, cbor: bool) -> Mapping[str, Any]:
    if not isinstance(document, dict):
        raise _error("manifest", f"must be a map/object, got {_type_name(document)}")
    required = _TOP_REQUIRED if cbor else _JSON_TOP_REQUIRED
    _check_keys(document, "manifest", required, _TOP_ALLOWED)
    if "schema" in document:
        schema = document["schema"]
        if schema != MANIFEST_SCHEMA:
            raise _error(
                "schema", f"unsupported {ascii(schema)[:80]}; expected {MANIFEST_SCHEMA!r}"
            )
    if not isinstance(document["files"], list):
        raise _error("files", f"must be an array, got {_type_name(document['files'])}")
    return document


def _raw_digest(value: object, algorithm: Algorithm, field: str) -> Digest:
    if type(value) is not bytes:
        raise _error(field, f"must be a 32-byte byte string, got {_type_name(value)}")
    try:
        return Digest(algorithm, value)
    except InvalidDigestError as exc:
        raise _error(field, f"must be a 32-byte byte string, got {len(value)} bytes") from exc


def _annotation_pairs(value: object, *, cbor: bool) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise _error("annotations", f"must be a map/object, got {_type_name(value)}")
    if cbor and not value:
        # An empty map and no map would be two encodings of one manifest.
        raise _error("annotations", "an empty map must be omitted")
    for key in value:
        if not isinstance(key, str):
            raise _error("annotations", f"keys must be text, got {_type_name(key)}")
    return tuple(sorted(value.items()))


def decode_manifest(data: bytes | bytearray | memoryview) -> Manifest:
    """Decode and validate canonical CBOR manifest bytes.

    Nothing is repaired: the result re-encodes to exactly ``data``.

    Raises:
        NonCanonicalCborError: the bytes are not core deterministic CBOR.
        ManifestError: the document breaks the schema (wrong schema string,
            unknown or missing keys, wrong types, invalid names or paths,
            unsorted or duplicate files, an empty annotations map); the
            message names the field, e.g. ``files[3].path: segment '..' not allowed``.
    """
    document = _top_level(decode_canonical(data), cbor=True)
    files: list[ManifestFile] = []
    for index, entry in enumerate(document["files"]):
        where = f"files[{index}]"
        if not isinstance(entry, dict):
            raise _error(where, f"must be a map, got {_type_name(entry)}")
        _check_keys(entry, where, _FILE_KEYS, _FILE_KEYS)
        sha256 = _raw_digest(entry["sha256"], "sha256", f"{where}.sha256")
        blake3 = _raw_digest(entry["blake3"], "blake3", f"{where}.blake3")
        try:
            file = ManifestFile(entry["path"], entry["size"], sha256, blake3, entry["media_type"])
        except ManifestError as exc:
            raise _prefixed(exc, f"{where}.") from exc
        files.append(file)
    annotations: tuple[tuple[str, str], ...] = ()
    if "annotations" in document:
        annotations = _annotation_pairs(document["annotations"], cbor=True)
    return Manifest(document["package"], document["version"], tuple(files), annotations)


def trusted_file_entries(data: bytes) -> list[dict[str, Any]]:
    """The ``files`` maps of canonical manifest bytes this registry validated when published.

    For folding ``v1.package.published`` into views (the payload carries the
    manifest): each map has ``path``, ``size``, ``sha256``, ``blake3`` (raw
    bytes) and ``media_type``. No validation (``decode_manifest`` did it at
    publish, and the hash chain covers the bytes since), no ``Manifest``
    objects: replay folds hundreds of thousands of files.

    Raises:
        ValueError: the bytes are not CBOR.
    """
    files: list[dict[str, Any]] = decode_trusted(data)["files"]
    return files


# --------------------------------------------------------------------------- JSON


def _json_digest(value: object, algorithm: Algorithm, field: str) -> Digest:
    if not isinstance(value, str):
        raise _error(field, f"must be text ({algorithm}:<64 hex> or 64 hex)")
    try:
        return Digest.parse(value, algorithm=algorithm)
    except InvalidDigestError as exc:
        raise _error(field, exc.message) from exc


def manifest_from_json(obj: Any) -> Manifest:
    """Build a ``Manifest`` from its JSON form (as parsed by ``json.loads``).

    The JSON form has the keys of DESIGN section 3; ``schema`` may be omitted
    (if present it must be ``MANIFEST_SCHEMA``), ``media_type`` defaults to
    ``DEFAULT_MEDIA_TYPE``, ``annotations`` may be omitted or empty, digests
    are ``sha256:<hex>``/``blake3:<hex>`` or bare lowercase hex, and files may
    come in any order (they are sorted). Errors index files as sent.

    Raises:
        ManifestError: unknown or missing keys, wrong types, invalid names,
            paths or digests, duplicate paths; the message names the field.
    """
    document = _top_level(obj, cbor=False)
    entries: list[tuple[str, int, ManifestFile]] = []
    for index, entry in enumerate(document["files"]):
        where = f"files[{index}]"
        if not isinstance(entry, dict):
            raise _error(where, f"must be an object, got {_type_name(entry)}")
        _check_keys(entry, where, _JSON_FILE_REQUIRED, _FILE_KEYS)
        sha256 = _json_digest(entry["sha256"], "sha256", f"{where}.sha256")
        blake3 = _json_digest(entry["blake3"], "blake3", f"{where}.blake3")
        try:
            file = ManifestFile(
                entry["path"],
                entry["size"],
                sha256,
                blake3,
                entry.get("media_type", DEFAULT_MEDIA_TYPE),
            )
        except ManifestError as exc:
            raise _prefixed(exc, f"{where}.") from exc
        entries.append((file.path, index, file))
    entries.sort(key=lambda item: item[0])
    _check_paths([path for path, _, _ in entries], [index for _, index, _ in entries])
    annotations: tuple[tuple[str, str], ...] = ()
    if document.get("annotations") is not None:
        annotations = _annotation_pairs(document["annotations"], cbor=False)
    return Manifest(
        document["package"],
        document["version"],
        tuple(file for _, _, file in entries),
        annotations,
    )


def manifest_to_json(manifest: Manifest) -> dict[str, Any]:
    """The JSON form of ``manifest``: digests as ``sha256:<hex>``/``blake3:<hex>``.

    Always carries ``schema``, every ``media_type`` and ``annotations`` (``{}``
    when empty); ``manifest_from_json`` of the result equals ``manifest``.
    """
    return {
        "schema": MANIFEST_SCHEMA,
        "package": manifest.package,
        "version": manifest.version,
        "files": [
            {
                "path": file.path,
                "size": file.size,
                "sha256": str(file.sha256),
                "blake3": str(file.blake3),
                "media_type": file.media_type,
            }
            for file in manifest.files
        ],
        "annotations": dict(manifest.annotations),
    }
