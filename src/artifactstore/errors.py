"""The exception tree of artifactstore.

Every error carries a stable snake_case ``code`` (DESIGN section 5). The edges
map families to their own vocabulary in one table each: ``api/errors.py`` to
HTTP statuses, ``gateway/errors.py`` to S3 error codes, ``cli/`` to exit codes.
Families are grouped by what the caller does next::

    ArtifactStoreError
    +-- NotFoundError (LookupError)           look elsewhere / report absence
    |   +-- BlobNotFoundError
    |   +-- PackageNotFoundError
    |   +-- VersionNotFoundError
    |   +-- FileNotInVersionError
    |   +-- UploadNotFoundError
    +-- ConflictError                         the state changed under you
    |   +-- VersionConflictError
    |   +-- VersionDeletedError
    |   +-- UploadOffsetMismatchError
    |   +-- NotLocalError
    +-- InvalidInputError (ValueError)        fix the request
    |   +-- InvalidDigestError
    |   +-- ManifestError
    |   |   +-- NonCanonicalCborError
    |   +-- InvalidNameError
    |   +-- InvalidRangeError
    |   +-- MissingBlobsError
    |   +-- TooLargeError
    |   +-- ConfigError
    +-- IntegrityError                        the bytes are not what they claim
    |   +-- DigestMismatchError
    |   +-- ChainBrokenError
    |   +-- SizeMismatchError
    +-- UnavailableError                      retry later / page an operator
    |   +-- BackendUnavailableError
    |   +-- DatabaseUnavailableError
    +-- AuthError                             present credentials
        +-- UnauthorizedError
        +-- ForbiddenError
"""

from __future__ import annotations

import contextlib
import errno
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "ArtifactStoreError",
    "AuthError",
    "BackendUnavailableError",
    "BlobNotFoundError",
    "ChainBrokenError",
    "ConfigError",
    "ConflictError",
    "DatabaseUnavailableError",
    "DigestMismatchError",
    "FileNotInVersionError",
    "ForbiddenError",
    "InsufficientStorageError",
    "IntegrityError",
    "InvalidDigestError",
    "InvalidInputError",
    "InvalidNameError",
    "InvalidRangeError",
    "ManifestError",
    "MissingBlobsError",
    "NonCanonicalCborError",
    "NotFoundError",
    "NotLocalError",
    "PackageNotFoundError",
    "ReplayInProgressError",
    "RequestTimeoutError",
    "SizeMismatchError",
    "TooLargeError",
    "UnauthorizedError",
    "UnavailableError",
    "UploadNotFoundError",
    "UploadOffsetMismatchError",
    "VersionConflictError",
    "VersionDeletedError",
    "VersionNotFoundError",
    "ViewsBusyError",
    "disk_space_checked",
    "is_disk_full",
]


class ArtifactStoreError(Exception):
    """Base of every error artifactstore raises on purpose."""

    code: ClassVar[str] = "artifactstore_error"

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail: dict[str, Any] = detail


class NotFoundError(ArtifactStoreError, LookupError):
    """Raised when the named thing does not exist."""

    code = "not_found"


class BlobNotFoundError(NotFoundError):
    """Raised when no blob (or no stored copy of it) has the given digest."""

    code = "blob_not_found"


class PackageNotFoundError(NotFoundError):
    """Raised when no package has the given name."""

    code = "package_not_found"


class VersionNotFoundError(NotFoundError):
    """Raised when the package has no such version."""

    code = "version_not_found"


class FileNotInVersionError(NotFoundError):
    """Raised when a published version has no file at the given path."""

    code = "file_not_found"


class UploadNotFoundError(NotFoundError):
    """Raised when an upload session is unknown, finished, aborted or expired."""

    code = "upload_not_found"


class ConflictError(ArtifactStoreError):
    """Raised when the request contradicts state that already exists."""

    code = "conflict"


class VersionConflictError(ConflictError):
    """Raised when a version exists with a different manifest."""

    code = "version_conflict"


class VersionDeletedError(ConflictError):
    """Raised when publishing a version that was deleted: a deletion is final."""

    code = "version_deleted"


class UploadOffsetMismatchError(ConflictError):
    """Raised when a chunk does not start at the session's current offset."""

    code = "offset_mismatch"


class NotLocalError(ConflictError):
    """Raised when a blob is held but no readable copy is a file on this machine."""

    code = "not_local"


class ReplayInProgressError(ConflictError):
    """Raised when ``events replay`` starts while another replay of the views runs."""

    code = "replay_in_progress"


class InvalidInputError(ArtifactStoreError, ValueError):
    """Raised when user-supplied input is malformed; nothing was changed."""

    code = "invalid_input"


class InvalidDigestError(InvalidInputError):
    """Raised when a digest's text or bytes have the wrong form or length."""

    code = "invalid_digest"


class ManifestError(InvalidInputError):
    """Raised when a manifest breaks the schema of DESIGN section 3."""

    code = "invalid_manifest"


class NonCanonicalCborError(ManifestError):
    """Raised when CBOR bytes are not in RFC 8949 core deterministic form."""

    code = "non_canonical_cbor"


class InvalidNameError(InvalidInputError):
    """Raised when a package name, version or file path is not allowed."""

    code = "invalid_name"


class InvalidRangeError(InvalidInputError):
    """Raised when a byte range cannot be satisfied by the object."""

    code = "invalid_range"


class MissingBlobsError(InvalidInputError):
    """Raised when a manifest references blobs the registry does not hold."""

    code = "missing_blobs"


class TooLargeError(InvalidInputError):
    """Raised when a body or blob exceeds a configured limit."""

    code = "too_large"


class ConfigError(InvalidInputError):
    """Raised when configuration is missing or malformed; names key and source."""

    code = "invalid_config"


class IntegrityError(ArtifactStoreError):
    """Raised when bytes or records do not match what they claim to be."""

    code = "integrity_error"


class DigestMismatchError(IntegrityError):
    """Raised when received bytes hash to something other than expected."""

    code = "digest_mismatch"


class SizeMismatchError(IntegrityError):
    """Raised when received bytes are longer or shorter than declared."""

    code = "size_mismatch"


class ChainBrokenError(IntegrityError):
    """Raised when the event hash chain does not verify; names the first bad seq."""

    code = "chain_broken"


class UnavailableError(ArtifactStoreError):
    """Raised when a dependency cannot be reached; retrying may help."""

    code = "unavailable"


class BackendUnavailableError(UnavailableError):
    """Raised when a storage backend cannot be reached or answers with an error."""

    code = "backend_unavailable"


class DatabaseUnavailableError(UnavailableError):
    """Raised when PostgreSQL cannot be reached or started."""

    code = "database_unavailable"


class InsufficientStorageError(UnavailableError):
    """Raised when a disk is full (staging, a local backend): nothing fits until space is freed.

    Not worth a quick retry, unlike the rest of its family: the space comes
    back when an operator (or garbage collection) frees it.
    """

    code = "insufficient_storage"


def is_disk_full(exc: OSError) -> bool:
    """A full filesystem or an exhausted quota (not a fault that a retry soon would fix)."""
    return exc.errno in {errno.ENOSPC, errno.EDQUOT}


@contextlib.contextmanager
def disk_space_checked(what: str) -> Iterator[None]:
    """Turn a full disk or exhausted quota inside the block into ``InsufficientStorageError``.

    Every other ``OSError`` passes through unchanged.
    """
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        raise InsufficientStorageError(
            f"{what}: no space left on the device{where}", errno=exc.errno
        ) from exc


class ViewsBusyError(UnavailableError):
    """Raised when a replay's swap waited too long for readers holding a view table."""

    code = "views_busy"


class RequestTimeoutError(ArtifactStoreError):
    """Raised when a client stops sending a request body it started (a 408; it may resume)."""

    code = "request_timeout"


class AuthError(ArtifactStoreError):
    """Raised when a request lacks the credentials it needs."""

    code = "auth_error"


class UnauthorizedError(AuthError):
    """Raised when no valid token was presented."""

    code = "unauthorized"


class ForbiddenError(AuthError):
    """Raised when the token's scope does not allow the operation."""

    code = "forbidden"
