"""Event payloads: one frozen dataclass per event type, stored as canonical CBOR.

A payload is a CBOR map with text keys; absent optional fields are omitted,
so equal payloads encode to equal bytes (and so to equal chain hashes).
Decoding is strict: the bytes must be canonical and the keys exactly those of
the type. Digests travel as 32-byte byte strings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeAlias

from artifactstore.cbor import decode_canonical, decode_trusted, encode_canonical
from artifactstore.errors import IntegrityError
from artifactstore.events.types import EventType

if TYPE_CHECKING:
    from artifactstore.digests import BlobDigests

__all__ = [
    "BlobStored",
    "EventPayload",
    "LocationDeleted",
    "LocationFailed",
    "LocationMissing",
    "LocationVerified",
    "PackageDeleted",
    "PackagePublished",
    "PackageYanked",
    "TokenCreated",
    "TokenRevoked",
    "decode_payload",
]


_FIELD_NAMES: dict[type, frozenset[str]] = {}


@dataclass(frozen=True, slots=True)
class _Payload:
    """Shared encoding of payload dataclasses."""

    TYPE: ClassVar[EventType]

    def to_cbor(self) -> bytes:
        """Canonical CBOR of the non-None fields."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return encode_canonical({k: v for k, v in fields.items() if v is not None})

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> Self:
        """Build from a decoded map; unknown or missing keys are an integrity error."""
        names = _FIELD_NAMES.get(cls)
        if names is None:
            names = _FIELD_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))
        unknown = data.keys() - names
        if unknown:
            raise IntegrityError(f"{cls.TYPE}: unknown payload keys {sorted(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise IntegrityError(f"{cls.TYPE}: malformed payload: {exc}") from exc


@dataclass(frozen=True, slots=True)
class BlobStored(_Payload):
    """``v1.blob.stored``: one complete copy of a blob on one backend."""

    TYPE: ClassVar[EventType] = EventType.BLOB_STORED
    sha256: bytes
    blake3: bytes
    size: int
    backend: str
    key: str

    @classmethod
    def copy_of(cls, digests: BlobDigests, backend: str, key: str) -> Self:
        """The event for a copy of the blob ``digests`` names, at ``key`` on ``backend``."""
        return cls(digests.sha256.raw, digests.blake3.raw, digests.size, backend, key)


@dataclass(frozen=True, slots=True)
class LocationVerified(_Payload):
    """``v1.storage.location_verified``: both digests of a copy matched on re-read."""

    TYPE: ClassVar[EventType] = EventType.LOCATION_VERIFIED
    sha256: bytes
    backend: str


@dataclass(frozen=True, slots=True)
class LocationFailed(_Payload):
    """``v1.storage.location_failed``: a copy's bytes did not match or could not be read."""

    TYPE: ClassVar[EventType] = EventType.LOCATION_FAILED
    sha256: bytes
    backend: str
    reason: str


@dataclass(frozen=True, slots=True)
class LocationMissing(_Payload):
    """``v1.storage.location_missing``: the backend has no object for a recorded copy."""

    TYPE: ClassVar[EventType] = EventType.LOCATION_MISSING
    sha256: bytes
    backend: str


@dataclass(frozen=True, slots=True)
class LocationDeleted(_Payload):
    """``v1.storage.location_deleted``: a copy was removed on purpose."""

    TYPE: ClassVar[EventType] = EventType.LOCATION_DELETED
    sha256: bytes
    backend: str


@dataclass(frozen=True, slots=True)
class PackagePublished(_Payload):
    """``v1.package.published``: the version and its whole canonical manifest."""

    TYPE: ClassVar[EventType] = EventType.PACKAGE_PUBLISHED
    package: str
    version: str
    manifest_sha256: bytes
    manifest: bytes
    producer: str | None = None
    retention_class: str | None = None


@dataclass(frozen=True, slots=True)
class PackageYanked(_Payload):
    """``v1.package.yanked``: the version is withdrawn from listings (not deleted)."""

    TYPE: ClassVar[EventType] = EventType.PACKAGE_YANKED
    package: str
    version: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PackageDeleted(_Payload):
    """``v1.package.deleted``: the version is gone; its name stays taken (blobs stay for GC)."""

    TYPE: ClassVar[EventType] = EventType.PACKAGE_DELETED
    package: str
    version: str
    manifest_sha256: bytes
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TokenCreated(_Payload):
    """``v1.token.created``: a named token with a scope; only its sha256 is kept."""

    TYPE: ClassVar[EventType] = EventType.TOKEN_CREATED
    name: str
    scope: str
    token_hash: bytes


@dataclass(frozen=True, slots=True)
class TokenRevoked(_Payload):
    """``v1.token.revoked``: the named token no longer authenticates."""

    TYPE: ClassVar[EventType] = EventType.TOKEN_REVOKED
    name: str


EventPayload: TypeAlias = (
    BlobStored
    | LocationVerified
    | LocationFailed
    | LocationMissing
    | LocationDeleted
    | PackagePublished
    | PackageYanked
    | PackageDeleted
    | TokenCreated
    | TokenRevoked
)

_BY_TYPE: dict[EventType, type[EventPayload]] = {
    cls.TYPE: cls
    for cls in (
        BlobStored,
        LocationVerified,
        LocationFailed,
        LocationMissing,
        LocationDeleted,
        PackagePublished,
        PackageYanked,
        PackageDeleted,
        TokenCreated,
        TokenRevoked,
    )
}


def decode_payload(event_type: str, payload: bytes, *, trusted: bool = False) -> EventPayload:
    """Decode a stored payload into its dataclass.

    ``trusted`` decodes without proving the bytes canonical
    (``cbor.decode_trusted``, 4-8x faster): for folding rows of the log, which only
    ``encode_canonical`` wrote and whose bytes the hash chain covers
    (``events verify``); a strict decode there would catch nothing the chain
    does not. Keys are checked either way.

    Raises:
        IntegrityError: unknown type, non-canonical (or, trusted, undecodable)
            bytes, or wrong keys.
    """
    try:
        cls = _BY_TYPE[EventType(event_type)]
    except (ValueError, KeyError) as exc:
        raise IntegrityError(f"unknown event type {event_type!r}") from exc
    try:
        data = decode_trusted(payload) if trusted else decode_canonical(payload)
    except ValueError as exc:
        raise IntegrityError(f"{event_type}: payload is not canonical CBOR: {exc}") from exc
    if not isinstance(data, dict):
        raise IntegrityError(f"{event_type}: payload is not a map")
    return cls.from_mapping(data)
