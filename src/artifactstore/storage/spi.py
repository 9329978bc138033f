"""Storage SPI: the contract every blob backend implements.

Backends keep bytes under sha256 keys; they know nothing of packages, events
or HTTP (DESIGN section 4). Writes are atomic (a blob is absent or complete)
and streamed; reads are streamed, whole or by byte range. Byte ranges follow
RFC 9110 section 14 and are parsed once, at the edge, into the three value
types below, then resolved against the object's size here.

Backends do not hash: the registry checks digests on ingest and ``storage
verify`` re-reads and re-hashes everything. A backend does check that a
stream delivers exactly the declared number of bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

from artifactstore.digests import Digest
from artifactstore.errors import InvalidRangeError

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator
    from pathlib import Path

__all__ = [
    "DEFAULT_READ_CHUNK",
    "BackendHealth",
    "ByteRange",
    "ObjectInfo",
    "ObjectStream",
    "OffsetByteRange",
    "ResolvedRange",
    "SliceByteRange",
    "StorageBackend",
    "SuffixByteRange",
    "digest_from_key",
    "object_key",
    "resolve_range",
]

DEFAULT_READ_CHUNK = 1024 * 1024
_KEY_TAIL_RE = re.compile(r"sha256/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})")


def object_key(sha256: Digest, key_prefix: str = "") -> str:
    """``<key_prefix>/sha256/<hex[0:2]>/<hex[2:4]>/<hex>``; only validated digests make keys."""
    if sha256.algorithm != "sha256":
        msg = "object keys are derived from sha256 digests only"
        raise ValueError(msg)
    h = sha256.hex
    tail = f"sha256/{h[0:2]}/{h[2:4]}/{h}"
    prefix = key_prefix.strip("/")
    return f"{prefix}/{tail}" if prefix else tail


def digest_from_key(key: str, key_prefix: str = "") -> Digest | None:
    """The sha256 a well-formed key names, or None for anything else (strays, temp files)."""
    prefix = key_prefix.strip("/")
    if prefix:
        if not key.startswith(prefix + "/"):
            return None
        key = key[len(prefix) + 1 :]
    m = _KEY_TAIL_RE.fullmatch(key)
    if m is None or m.group(3)[0:2] != m.group(1) or m.group(3)[2:4] != m.group(2):
        return None
    return Digest.from_hex("sha256", m.group(3))


@dataclass(frozen=True, slots=True)
class SliceByteRange:
    """``bytes=start-`` with an end: ``start`` inclusive, ``end`` exclusive (HTTP's last+1)."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class OffsetByteRange:
    """``bytes=offset-``: from ``offset`` (inclusive) to the end of the object."""

    offset: int


@dataclass(frozen=True, slots=True)
class SuffixByteRange:
    """``bytes=-suffix``: the last ``suffix`` bytes (all of them if the object is shorter)."""

    suffix: int


ByteRange: TypeAlias = SliceByteRange | OffsetByteRange | SuffixByteRange


@dataclass(frozen=True, slots=True)
class ResolvedRange:
    """A satisfiable range of a ``size``-byte object: ``start`` inclusive, ``end`` exclusive."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        """Bytes in the range."""
        return self.end - self.start

    @property
    def is_whole(self) -> bool:
        """True when the range covers the whole object."""
        return self.start == 0 and self.end == self.size

    def content_range(self) -> str:
        """The value of a ``Content-Range`` header for this range."""
        return f"bytes {self.start}-{self.end - 1}/{self.size}"


def resolve_range(byte_range: ByteRange | None, size: int) -> ResolvedRange:
    """Resolve a requested range against an object size (RFC 9110 section 14.1.2).

    ``None`` means the whole object. A range whose end lies past the object is
    clamped; a range that starts at or past the end (or a zero suffix) is not
    satisfiable.

    Raises:
        InvalidRangeError: the range selects no byte of the object.
    """
    match byte_range:
        case None:
            return ResolvedRange(0, size, size)
        case SliceByteRange(start, end):
            if start < 0 or end <= start or start >= size:
                raise InvalidRangeError(
                    f"range {start}-{end - 1} not satisfiable for size {size}", size=size
                )
            return ResolvedRange(start, min(end, size), size)
        case OffsetByteRange(offset):
            if offset < 0 or offset >= size:
                raise InvalidRangeError(
                    f"range {offset}- not satisfiable for size {size}", size=size
                )
            return ResolvedRange(offset, size, size)
        case SuffixByteRange(suffix):
            if suffix <= 0 or size == 0:
                raise InvalidRangeError(
                    f"suffix range -{suffix} not satisfiable for size {size}", size=size
                )
            return ResolvedRange(max(0, size - suffix), size, size)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One stored object as the backend sees it."""

    sha256: Digest
    size: int
    key: str


@dataclass(frozen=True, slots=True)
class ObjectStream:
    """An opened read: what was found, which bytes will flow, and the bytes.

    Opening checks existence and the range before any byte flows, so an edge
    can answer 404 or 416 before it commits to a status line. Iterate
    ``chunks`` to the end or call ``aclose`` to release the backend's resources.
    """

    info: ObjectInfo
    range: ResolvedRange
    chunks: AsyncIterator[bytes]

    async def aclose(self) -> None:
        """Stop reading early; safe to call after exhaustion."""
        closer = getattr(self.chunks, "aclose", None)
        if closer is not None:
            await closer()

    async def read_all(self) -> bytes:
        """Collect the stream (small objects and tests only)."""
        parts = [chunk async for chunk in self.chunks]
        return b"".join(parts)


@dataclass(frozen=True, slots=True)
class BackendHealth:
    """The result of a cheap reachability check."""

    ok: bool
    detail: str = ""


@runtime_checkable
class StorageBackend(Protocol):
    """Stores blobs under sha256 keys. All methods are safe to call concurrently.

    Implementations: ``local`` (filesystem), ``postgres`` (bytea blocks),
    ``s3`` (any S3 endpoint). Errors from the underlying system are raised as
    ``BackendUnavailableError``; absence as ``BlobNotFoundError``.
    """

    @property
    def name(self) -> str:
        """The backend's configured name (``storage.backends.<name>``)."""
        ...

    @property
    def kind(self) -> str:
        """The backend type: ``local``, ``postgres`` or ``s3``."""
        ...

    async def put_stream(
        self, sha256: Digest, chunks: AsyncIterable[bytes], size: int
    ) -> ObjectInfo:
        """Store exactly ``size`` bytes from ``chunks`` under ``sha256``, atomically.

        Idempotent: storing a blob that exists succeeds (content-addressed).
        Raises ``SizeMismatchError`` (and stores nothing) if the stream is
        shorter or longer than ``size``.
        """
        ...

    async def put_file(self, sha256: Digest, path: Path, *, consume: bool = False) -> ObjectInfo:
        """Store a staged file's bytes under ``sha256``, atomically.

        With ``consume`` the backend may take the file instead of copying it
        (a rename on the same filesystem); the caller must not use it after.
        """
        ...

    async def get(self, sha256: Digest, byte_range: ByteRange | None = None) -> ObjectStream:
        """Open a streamed read of the whole object or a range of it.

        Raises ``BlobNotFoundError`` when absent and ``InvalidRangeError``
        when the range selects nothing, both before any byte is read.
        """
        ...

    async def head(self, sha256: Digest) -> ObjectInfo | None:
        """The stored object's info, or None when absent."""
        ...

    async def delete(self, sha256: Digest) -> bool:
        """Remove the object; True if something was removed. Idempotent."""
        ...

    def iter_objects(self) -> AsyncIterator[ObjectInfo]:
        """Every complete stored object, once each; never temp files of unfinished writes."""
        ...

    async def health(self) -> BackendHealth:
        """A cheap check that the backend can be reached and written."""
        ...

    async def aclose(self) -> None:
        """Release connections and files; the backend is unusable afterwards."""
        ...
