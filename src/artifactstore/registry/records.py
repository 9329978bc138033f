"""Read models the registry returns: plain frozen values, no database handles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from datetime import datetime

    from artifactstore.digests import Digest

T = TypeVar("T")

__all__ = [
    "BlobRecord",
    "FileRecord",
    "LocationRecord",
    "PackageRecord",
    "Page",
    "PublishResult",
    "VersionRecord",
]


@dataclass(frozen=True, slots=True)
class LocationRecord:
    """One copy of a blob on one backend and its last known state."""

    backend: str
    key: str
    state: str
    detail: str
    updated_at: datetime
    verified_at: datetime | None


@dataclass(frozen=True, slots=True)
class BlobRecord:
    """A blob the registry holds: both digests, size, and its copies."""

    sha256: Digest
    blake3: Digest
    size: int
    stored_at: datetime
    locations: tuple[LocationRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class PackageRecord:
    """A package: its name and how many versions it has."""

    name: str
    created_at: datetime
    updated_at: datetime
    version_count: int


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """A published version and its manifest's identity."""

    package: str
    version: str
    manifest_sha256: Digest
    published_at: datetime
    actor: str
    producer: str | None
    retention_class: str | None
    file_count: int
    total_size: int
    yanked: bool
    yanked_at: datetime | None
    yank_reason: str | None


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One file of a published version."""

    package: str
    version: str
    path: str
    size: int
    sha256: Digest
    blake3: Digest
    media_type: str
    published_at: datetime
    yanked: bool

    @property
    def key(self) -> str:
        """``<version>/<path>``: the object key the S3 gateway shows."""
        return f"{self.version}/{self.path}"


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a keyset-paginated listing; ``next_cursor`` is None on the last."""

    items: tuple[T, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The outcome of a publish: the manifest's sha256 and whether it was new."""

    manifest_sha256: Digest
    created: bool
