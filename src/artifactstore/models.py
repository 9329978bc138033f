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
import types
import typing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self

from artifactstore import errors
from artifactstore.digests import Digest

__all__ = [
    "BlobInfo",
    "EventInfo",
    "LocationInfo",
    "PackageInfo",
    "PublishInfo",
    "UploadSessionInfo",
    "VersionInfo",
]

_DIGEST_ALGORITHMS = {"sha256": "sha256", "manifest_sha256": "sha256", "blake3": "blake3"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Digest):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, _Record):
        return value.to_json()
    return value


def _read(name: str, kind: Any, value: Any) -> Any:
    """``value`` from the wire as the field ``name`` of type ``kind`` holds it."""
    args = typing.get_args(kind)
    if isinstance(kind, types.UnionType):  # X | None: the only unions here
        return None if value is None else _read(name, args[0], value)
    if kind is Digest:
        return Digest.parse(str(value), algorithm=_DIGEST_ALGORITHMS[name])  # type: ignore[arg-type]
    if kind is datetime:
        return datetime.fromisoformat(str(value))
    if typing.get_origin(kind) is tuple:
        return tuple(args[0].from_json(item) for item in value)
    if typing.get_origin(kind) is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{name} is not an object")
        return dict(value)
    if kind in {str, int, bool} and not isinstance(value, kind):
        raise TypeError(f"{name} is not a {kind.__name__}")
    return value


class _Record:
    """Shared by every answer: read from JSON, written to JSON, built from a registry record."""

    _hints: ClassVar[dict[str, Any]]

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Read the answer; ``IntegrityError`` when it does not have this shape.

        Keys the record does not name are ignored (a newer server may add some).
        """
        hints = cls.__dict__.get("_hints") or typing.get_type_hints(cls)
        cls._hints = hints
        values = {}
        try:
            for f in dataclasses.fields(cls):  # type: ignore[arg-type]
                if f.name in data:
                    values[f.name] = _read(f.name, hints[f.name], data[f.name])
                elif f.default is dataclasses.MISSING:
                    raise KeyError(f.name)
            return cls(**values)
        except (KeyError, TypeError, ValueError, errors.InvalidInputError) as exc:
            raise errors.IntegrityError(
                f"the server's answer is not a {cls.__name__}: {exc!r}", answer=str(data)[:200]
            ) from exc

    @classmethod
    def of(cls, record: object, **given: Any) -> Self:
        """The answer for a registry record with the same field names (``given`` overrides)."""
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        return cls(**{n: given[n] if n in given else getattr(record, n) for n in names})

    def to_json(self) -> dict[str, Any]:
        """The record as the API sends it."""
        return {
            f.name: _jsonable(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
        }


@dataclass(frozen=True, slots=True)
class LocationInfo(_Record):
    """One stored copy of a blob."""

    backend: str
    state: str
    detail: str | None
    updated_at: datetime
    verified_at: datetime | None


@dataclass(frozen=True, slots=True)
class BlobInfo(_Record):
    """A blob: its two names and size (and its copies, where the answer lists them)."""

    sha256: Digest
    blake3: Digest
    size: int
    stored_at: datetime | None = None
    locations: tuple[LocationInfo, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Names and size always; the time and copies only when known."""
        data = _Record.to_json(self)
        if self.stored_at is None:
            del data["stored_at"], data["locations"]
        return data


@dataclass(frozen=True, slots=True)
class UploadSessionInfo(_Record):
    """An upload session's public state."""

    id: str
    offset: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class PackageInfo(_Record):
    """A package summary."""

    name: str
    created_at: datetime
    updated_at: datetime
    version_count: int


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


@dataclass(frozen=True, slots=True)
class PublishInfo(_Record):
    """The answer to a publish: the manifest digest and whether this call created the version."""

    package: str
    version: str
    manifest_sha256: Digest
    created: bool


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
