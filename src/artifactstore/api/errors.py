"""HTTP error mapping: every artifactstore error becomes the JSON error shape of DESIGN section 5.

One table maps error classes to statuses; the most specific class wins. Bad
input never becomes a 500: validation errors from FastAPI are reshaped into
the same JSON body with code ``invalid_request``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from artifactstore import errors as e
from artifactstore.db.outage import DRIVER_ERRORS, RETRY_AFTER_SECONDS, database_outage
from artifactstore.protocol import OFFSET_HEADER, error_body

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

__all__ = ["error_response", "install_error_handlers", "status_for"]

log = logging.getLogger("artifactstore.api")

STATUS_BY_ERROR: tuple[tuple[type[e.ArtifactStoreError], int], ...] = (
    (e.MissingBlobsError, 422),
    (e.TooLargeError, 413),
    (e.InvalidRangeError, 416),
    (e.InvalidInputError, 400),
    (e.NotFoundError, 404),
    (e.UploadOffsetMismatchError, 409),
    (e.ConflictError, 409),
    (e.DigestMismatchError, 400),
    (e.SizeMismatchError, 400),
    (e.IntegrityError, 500),
    (e.UnauthorizedError, 401),
    (e.ForbiddenError, 403),
    (e.InsufficientStorageError, 507),
    (e.UnavailableError, 503),
    (e.RequestTimeoutError, 408),
)


def status_for(exc: e.ArtifactStoreError) -> int:
    """The HTTP status for an error: the first table entry it is an instance of."""
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(
    status: int,
    code: str,
    message: str,
    detail: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The one error body shape: ``{"error": {"code", "message", "detail"}}``."""
    body = error_body(code, message, jsonable_encoder(detail or {}))
    return JSONResponse(body, status_code=status, headers=headers)


async def _artifactstore_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.ArtifactStoreError)
    status = status_for(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, e.UploadOffsetMismatchError):
        headers[OFFSET_HEADER] = str(exc.detail.get("offset", 0))
    if isinstance(exc, e.InvalidRangeError) and "size" in exc.detail:
        headers["Content-Range"] = f"bytes */{exc.detail['size']}"
    if isinstance(exc, e.RequestTimeoutError):  # the rest of its body is not coming
        headers["Connection"] = "close"
    if isinstance(exc, e.UnauthorizedError):
        headers["WWW-Authenticate"] = 'Bearer realm="artifactstore"'
    if isinstance(exc, e.DatabaseUnavailableError):
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if status >= 500:  # noqa: PLR2004 - server-side failures are logged, client errors are not
        log.warning("request failed: %s: %s", exc.code, exc.message)
    return error_response(status, exc.code, exc.message, exc.detail, headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", ""))}
        for err in exc.errors()
    ]
    first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
    message = f"{'.'.join(first['loc'])}: {first['msg']}" if first["loc"] else str(first["msg"])
    return error_response(400, "invalid_request", message, {"problems": problems})


_DISK_FULL_SQLSTATE = "53100"


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """A database error: the database away is a 503 to retry (``db.outage``).

    Input PostgreSQL refuses as data (SQLSTATE class 22) is a client error,
    never a 500: a safety net behind the validation at the edge, logged,
    because it means a check is missing upstream.
    """
    outage = database_outage(exc)
    if outage is not None:
        log.debug("database unavailable: %s: %s", type(exc).__name__, exc)
        return await _artifactstore_error(request, outage)
    sqlstate = str(getattr(getattr(exc, "orig", exc), "sqlstate", "") or "")
    if sqlstate == _DISK_FULL_SQLSTATE:
        full = e.InsufficientStorageError("the database's disk is full")
        return await _artifactstore_error(request, full)
    if not sqlstate.startswith("22"):
        log.warning("database error: %s", type(getattr(exc, "orig", exc)).__name__)
        return error_response(503, "database_unavailable", "the database failed the request")
    log.warning("input refused by the database (SQLSTATE %s): a missing edge check", sqlstate)
    return error_response(400, "invalid_input", "a parameter has a value the registry cannot store")


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}.get(
        exc.status_code, "http_error"
    )
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, code, str(exc.detail), headers=headers)


async def _too_deep(_request: Request, exc: Exception) -> JSONResponse:
    """A JSON body nested deeper than the parser's recursion allows: bad input, not a 500."""
    assert isinstance(exc, RecursionError)
    return error_response(400, "invalid_request", "the JSON body is nested too deeply")


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    """Anything unforeseen: logged with its traceback, answered as the JSON error shape."""
    if isinstance(exc, OSError) and e.is_disk_full(exc):
        return error_response(507, "insufficient_storage", "no space left on the device")
    if isinstance(exc, TimeoutError):  # e.g. a statement past database.command_timeout_seconds
        log.warning("request timed out waiting on a dependency")
        return error_response(503, "unavailable", "a dependency gave no answer in time")
    log.error("unexpected error", exc_info=exc)
    return error_response(500, "internal_error", "the server failed; the log says why")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on an app."""
    app.add_exception_handler(e.ArtifactStoreError, _artifactstore_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for driver_error in DRIVER_ERRORS:
        app.add_exception_handler(driver_error, _database_error)
    app.add_exception_handler(RecursionError, _too_deep)
    app.add_exception_handler(Exception, _unexpected)
