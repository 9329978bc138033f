"""The REST API's answers as typed records, shared by the server (``to_json``) and the client.

The API builds each answer from one of these records and the client reads
it back with ``from_json``, so both sides agree on one shape (docs/API.md):
digests are ``Digest`` values here and ``<algorithm>:<hex>`` text on the
wire, times are timezone-aware ``datetime`` values here and ISO 8601 text
on the wire. Only the standard library and the core kernels are imported.

``from_json`` raises ``IntegrityError`` for an answer that does not have
the shape (a server that is not artifactstore, or a broken proxy): a client
must not go on with half-read data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self, TypeVar

from artifactstore import errors
from artifactstore.digests import Algorithm, Digest

__all__ = [
    "BlobInfo",
    "EventInfo",
    "LocationInfo",
    "PackageInfo",
    "PublishInfo",
    "UploadSessionInfo",
    "VersionInfo",
]


T = TypeVar("T")


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value))


def _maybe_time(value: Any) -> datetime | None:
    return None if value is None else _time(value)


def _digest(value: Any, algorithm: Algorithm) -> Digest:
    return Digest.parse(str(value), algorithm=algorithm)


def _read(cls: type[T], data: Any, build: Any) -> T:
    """Run ``build(data)``, turning any shape error into ``IntegrityError``."""
    try:
        result: T = build(data)
    except (KeyError, TypeError, ValueError, errors.InvalidInputError) as exc:
        raise errors.IntegrityError(
            f"the server's answer is not a {cls.__name__}: {exc}", answer=str(data)[:200]
        ) from exc
    return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, Digest):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


class _Record:
    def to_json(self) -> dict[str, Any]:
        """The record as the API sends it."""
        result: dict[str, Any] = _jsonable(self)
        return result


@dataclass(frozen=True, slots=True)
class LocationInfo(_Record):
    """One stored copy of a blob."""

    backend: str
    state: str
    detail: str | None
    updated_at: datetime
    verified_at: datetime | None

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Read one location of a blob answer."""
        return _read(
            cls,
            data,
            lambda d: cls(
                str(d["backend"]),
                str(d["state"]),
                None if d.get("detail") is None else str(d["detail"]),
                _time(d["updated_at"]),
                _maybe_time(d.get("verified_at")),
            ),
        )


@dataclass(frozen=True, slots=True)
class BlobInfo(_Record):
    """A blob: its two names and size (and its copies, where the answer lists them)."""

    sha256: Digest
    blake3: Digest
    size: int
    stored_at: datetime | None = None
    locations: tuple[LocationInfo, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Read a blob answer (``POST /v1/blobs``, a finalize, ``exists`` entries)."""
        return _read(
            cls,
            data,
            lambda d: cls(
                _digest(d["sha256"], "sha256"),
                _digest(d["blake3"], "blake3"),
                int(d["size"]),
                _maybe_time(d.get("stored_at")),
                tuple(LocationInfo.from_json(loc) for loc in d.get("locations", ())),
            ),
        )

    def to_json(self) -> dict[str, Any]:
        """Names and size always; the time and copies only when known."""
        data = {"sha256": str(self.sha256), "blake3": str(self.blake3), "size": self.size}
        if self.stored_at is not None:
            data["stored_at"] = self.stored_at.isoformat()
            data["locations"] = [loc.to_json() for loc in self.locations]
        return data


@dataclass(frozen=True, slots=True)
class UploadSessionInfo(_Record):
    """An upload session's public state."""

    id: str
    offset: int
    expires_at: datetime

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Read ``POST /v1/uploads`` (201) or ``GET /v1/uploads/{id}``."""
        return _read(
            cls, data, lambda d: cls(str(d["id"]), int(d["offset"]), _time(d["expires_at"]))
        )


@dataclass(frozen=True, slots=True)
class PackageInfo(_Record):
    """A package summary."""

    name: str
    created_at: datetime
    updated_at: datetime
    version_count: int

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Read one package of ``GET /v1/packages``."""
        return _read(
            cls,
            data,
            lambda d: cls(
                str(d["name"]),
                _time(d["created_at"]),
                _time(d["updated_at"]),
                int(d["version_count"]),
            ),
        )


@dataclass(frozen=True, slots=True)
class VersionInfo(_Record):
    """A published version (without its manifest)."""

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

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Read a version summary (extra keys such as ``manifest`` are ignored)."""
        return _read(
            cls,
            data,
            lambda d: cls(
                str(d["package"]),
                str(d["version"]),
                _digest(d["manifest_sha256"], "sha256"),
                _time(d["published_at"]),
                str(d["actor"]),
                d.get("producer"),
                d.get("retention_class"),
                int(d["file_count"]),
                int(d["total_size"]),
                bool(d["yanked"]),
                _maybe_time(d.get("yanked_at")),
                d.get("yank_reason"),
            ),
        )


@dataclass(frozen=True, slots=True)
class PublishInfo(_Record):
    """The answer to a publish: the manifest digest and whether this call created the version."""

    package: str
    version: str
    manifest_sha256: Digest
    created: bool

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Read ``PUT /v1/packages/{name}/versions/{version}``."""
        return _read(
            cls,
            data,
            lambda d: cls(
                str(d["package"]),
                str(d["version"]),
                _digest(d["manifest_sha256"], "sha256"),
                bool(d["created"]),
            ),
        )


@dataclass(frozen=True, slots=True)
class EventInfo(_Record):
    """One event of the log, its payload as JSON (digests as text)."""

    seq: int
    id: str
    type: str
    occurred_at: datetime
    actor: str
    prev_hash: str
    hash: str
    payload: dict[str, Any]

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Read one event of ``GET /v1/events`` or the event stream."""
        return _read(
            cls,
            data,
            lambda d: cls(
                int(d["seq"]),
                str(d["id"]),
                str(d["type"]),
                _time(d["occurred_at"]),
                str(d["actor"]),
                str(d["prev_hash"]),
                str(d["hash"]),
                dict(d["payload"]),
            ),
        )
