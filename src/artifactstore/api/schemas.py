"""JSON shapes of the REST API (docs/API.md): request models in, ``artifactstore.models`` out.

Digests are always text with their algorithm (``sha256:<hex>``); times are
ISO 8601 in UTC. Request bodies that are JSON are validated by pydantic
models here, so bad input is a 400 before any handler runs.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from artifactstore.digests import Algorithm, Digest
from artifactstore.models import (
    BlobInfo,
    EventInfo,
    LocationInfo,
    PackageInfo,
    UploadSessionInfo,
    VersionInfo,
)

if TYPE_CHECKING:
    from artifactstore.digests import BlobDigests
    from artifactstore.events import Event
    from artifactstore.registry import BlobRecord, PackageRecord, UploadSession, VersionRecord

__all__ = [
    "LABEL_PATTERN",
    "MAX_EXISTS_ENTRIES",
    "BlobRef",
    "CreateUpload",
    "DeleteRequest",
    "ExistsRequest",
    "LabelQuery",
    "YankRequest",
    "blob_json",
    "digests_json",
    "event_json",
    "package_json",
    "parse_digest",
    "session_json",
    "version_json",
]

LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._*@/+-]{0,127}$"
MAX_EXISTS_ENTRIES = 1000
LabelQuery = Annotated[str | None, Query(pattern=LABEL_PATTERN)]
"""A ``producer`` or ``retention_class`` query parameter."""


def parse_digest(value: str | None, algorithm: Algorithm) -> Digest | None:
    """A request's digest parameter (``<alg>:<hex>`` or bare hex); None when absent or empty.

    Raises:
        InvalidDigestError: not 64 lowercase hex characters of ``algorithm`` (a 400).
    """
    if value is None or value == "":
        return None
    return Digest.parse(value, algorithm=algorithm)


class CreateUpload(BaseModel):
    """``POST /v1/uploads`` body."""

    model_config = ConfigDict(extra="forbid")
    size: int | None = Field(default=None, ge=0, le=2**63 - 1)
    sha256: str | None = Field(default=None, max_length=71)
    blake3: str | None = Field(default=None, max_length=71)
    producer: str | None = Field(default=None, pattern=LABEL_PATTERN)
    retention_class: str | None = Field(default=None, pattern=LABEL_PATTERN)


class BlobRef(BaseModel):
    """One entry of ``POST /v1/blobs/exists``: a blob named by sha256, blake3 or both."""

    model_config = ConfigDict(extra="forbid")
    sha256: str | None = Field(default=None, pattern=r"^(sha256:)?[0-9a-f]{64}$")
    blake3: str | None = Field(default=None, pattern=r"^(blake3:)?[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _named(self) -> BlobRef:
        if self.sha256 is None and self.blake3 is None:
            raise ValueError("each entry needs a sha256 or a blake3")
        return self


class ExistsRequest(BaseModel):
    """``POST /v1/blobs/exists`` body: up to 1,000 blobs, and the routing labels to check."""

    model_config = ConfigDict(extra="forbid")
    blobs: list[BlobRef] = Field(min_length=1, max_length=MAX_EXISTS_ENTRIES)
    producer: str | None = Field(default=None, pattern=LABEL_PATTERN)
    retention_class: str | None = Field(default=None, pattern=LABEL_PATTERN)


class YankRequest(BaseModel):
    """``POST .../yank`` body."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=1024)


class DeleteRequest(BaseModel):
    """``DELETE .../versions/{version}`` and ``DELETE /v1/packages/{name}`` body (optional)."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=1000)


def blob_json(blob: BlobRecord) -> dict[str, Any]:
    """A blob and its copies."""
    return BlobInfo.of(blob, locations=tuple(LocationInfo.of(c) for c in blob.locations)).to_json()


def digests_json(digests: BlobDigests) -> dict[str, Any]:
    """A blob's names and size, without its copies."""
    return BlobInfo(sha256=digests.sha256, blake3=digests.blake3, size=digests.size).to_json()


def session_json(session: UploadSession) -> dict[str, Any]:
    """An upload session's public state."""
    return UploadSessionInfo.of(session, id=str(session.id)).to_json()


def package_json(package: PackageRecord) -> dict[str, Any]:
    """A package summary."""
    return PackageInfo.of(package).to_json()


def version_json(version: VersionRecord) -> dict[str, Any]:
    """A version summary (the manifest is added by the handler that has it)."""
    return VersionInfo.of(version).to_json()


_DIGEST_FIELDS = {"sha256": "sha256", "blake3": "blake3", "manifest_sha256": "sha256"}
_HIDDEN_FIELDS = {"token_hash", "manifest"}


def event_json(event: Event) -> dict[str, Any]:
    """An event with its payload as JSON (digests as text; raw manifests and hashes omitted)."""
    data = event.data()
    payload: dict[str, Any] = {}
    for f in dataclasses.fields(data):
        value = getattr(data, f.name)
        if f.name in _HIDDEN_FIELDS or value is None:
            continue
        if f.name in _DIGEST_FIELDS and isinstance(value, bytes):
            value = f"{_DIGEST_FIELDS[f.name]}:{value.hex()}"
        payload[f.name] = value
    return EventInfo.of(
        event,
        id=str(event.id),
        prev_hash=event.prev_hash.hex(),
        hash=event.hash.hex(),
        payload=payload,
    ).to_json()
