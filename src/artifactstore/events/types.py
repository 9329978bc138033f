"""The event vocabulary: every event type, declared once.

Types are versioned strings ``v<N>.<family>.<name>``. A published type never
changes meaning; a new meaning gets a ``v2.*`` type (DESIGN section 2). No
other module writes these strings as literals.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["EventType"]


class EventType(StrEnum):
    """Every event type the log may contain."""

    BLOB_STORED = "v1.blob.stored"
    """A complete, digest-checked copy of a blob now exists on a backend."""
    LOCATION_VERIFIED = "v1.storage.location_verified"
    """A verify pass re-read a copy and both digests matched."""
    LOCATION_FAILED = "v1.storage.location_failed"
    """A verify pass re-read a copy and its bytes did not match (or could not be read)."""
    LOCATION_MISSING = "v1.storage.location_missing"
    """A verify pass found no object where a copy should be."""
    LOCATION_DELETED = "v1.storage.location_deleted"
    """A copy was deliberately removed from a backend."""
    PACKAGE_PUBLISHED = "v1.package.published"
    """A version was published; the payload carries its canonical manifest."""
    PACKAGE_YANKED = "v1.package.yanked"
    """A version was yanked: still readable by exact name, hidden from listings."""
    PACKAGE_DELETED = "v1.package.deleted"
    """A version was deleted: gone everywhere, its name never published again."""
    TOKEN_CREATED = "v1.token.created"  # noqa: S105 - an event name, not a secret
    """An API token was created; only its hash is recorded."""
    TOKEN_REVOKED = "v1.token.revoked"  # noqa: S105 - an event name, not a secret
    """An API token was revoked."""

    @property
    def version(self) -> int:
        """The schema version (the ``N`` of ``vN``)."""
        return int(self.value.split(".", 1)[0][1:])

    @property
    def family(self) -> str:
        """The middle part: ``blob``, ``storage``, ``package`` or ``token``."""
        return self.value.split(".")[1]

    @property
    def action(self) -> str:
        """The last part, for example ``stored``."""
        return self.value.split(".")[2]
