"""The REST protocol's names and error body, one home for the server and the client.

Both sides import these: the API, the handoff listener and the server's
start-up (which writes the admin token) on one side, ``artifactstore.client``
on the other. Only the standard library and ``artifactstore.errors`` are
imported, so a client-only program stays light.

The error body (DESIGN section 5) is ``{"error": {"code", "message",
"detail"}}``; ``error_from_body`` rebuilds the ``artifactstore.errors`` class
with that ``code`` (by HTTP status when the code is unknown), so a client
catches the same classes the server raised.
"""

from __future__ import annotations

from typing import Any

from artifactstore import errors

__all__ = [
    "ADMIN_TOKEN_FILE",
    "DEPLOYMENT_HEADER",
    "ENV_TOKEN",
    "ERRORS_BY_CODE",
    "HANDOFF_HEADER",
    "HANDOFF_SOCKET",
    "OFFSET_HEADER",
    "error_body",
    "error_from_body",
]

ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 - a file name under the data dir
"""The admin token the server writes on first start; clients on loopback read it."""
ENV_TOKEN = "ARTIFACTSTORE_TOKEN"  # noqa: S105 - a variable name
"""The environment variable a client takes its bearer token from."""
DEPLOYMENT_HEADER = "Artifactstore-Deployment"
"""Response header naming the deployment (one database: every replica answers the same id);
clients key remembered upload sessions on it (``client/session_cache.py``)."""
HANDOFF_SOCKET = "handoff.sock"
"""The same-host socket under the data dir (``api/handoff.py``)."""
HANDOFF_HEADER = "Upload-Handoff"
"""Response header (to loopback peers only) naming the handoff socket's path."""
OFFSET_HEADER = "Upload-Offset"
"""The resume point of an upload session, both ways."""


def _error_classes() -> dict[str, type[errors.ArtifactStoreError]]:
    found: dict[str, type[errors.ArtifactStoreError]] = {}
    for name in errors.__all__:
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, errors.ArtifactStoreError):
            found.setdefault(cls.code, cls)
    return found


ERRORS_BY_CODE = _error_classes()

# When a body carries no code we know: the family that the status means.
_ERRORS_BY_STATUS: dict[int, type[errors.ArtifactStoreError]] = {
    400: errors.InvalidInputError,
    401: errors.UnauthorizedError,
    403: errors.ForbiddenError,
    404: errors.NotFoundError,
    408: errors.RequestTimeoutError,  # also the connection layer's plain-text 408
    409: errors.ConflictError,
    413: errors.TooLargeError,
    416: errors.InvalidRangeError,
    422: errors.InvalidInputError,
    507: errors.InsufficientStorageError,
}


def error_body(code: str, message: str, detail: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one error body shape (values of ``detail`` must already be JSON)."""
    return {"error": {"code": code, "message": message, "detail": detail or {}}}


def error_from_body(
    status: int, body: object, *, fallback: str = "", offset_header: str | None = None
) -> errors.ArtifactStoreError:
    """The exception an error answer stands for.

    ``body`` is the decoded JSON (anything else counts as no body); the
    ``detail`` keeps the server's detail plus ``http_status``. ``fallback`` is
    the message when the body has none. An ``offset_mismatch`` takes its
    offset from ``offset_header`` when the body lacks it.
    """
    code, message, detail = "", "", {}
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code") or "")
        message = str(err.get("message") or "")
        if isinstance(err.get("detail"), dict):
            detail = dict(err["detail"])
    cls = ERRORS_BY_CODE.get(code) or _ERRORS_BY_STATUS.get(status)
    if cls is None:
        cls = errors.UnavailableError if status >= 500 else errors.ArtifactStoreError  # noqa: PLR2004
    missing_offset = cls is errors.UploadOffsetMismatchError and "offset" not in detail
    if missing_offset and offset_header is not None and offset_header.isdigit():
        detail["offset"] = int(offset_header)
    exc = cls(message or fallback or f"the server answered {status}")
    exc.detail = {**detail, "http_status": status}
    return exc
