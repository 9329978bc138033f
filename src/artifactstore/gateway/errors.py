"""S3 errors at the gateway's edge: one exception type and the one mapping table.

Owns: ``S3Error`` (an S3 error code, message, HTTP status and the extra
fields S3 puts in its Error document), the table of S3 codes with their
statuses and default messages, and the translation of artifactstore's error
families (``artifactstore.errors``) into S3 codes (STYLE 5: each edge maps
families in one table). It does not render HTTP responses; ``to_xml`` gives
the body and the app sets the status and ``Content-Type: application/xml``.

Spec: the "Error responses" list of the Amazon S3 API reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from artifactstore.db.outage import database_outage
from artifactstore.errors import (
    ArtifactStoreError,
    AuthError,
    BlobNotFoundError,
    ConflictError,
    FileNotInVersionError,
    IntegrityError,
    InvalidInputError,
    InvalidRangeError,
    NotFoundError,
    PackageNotFoundError,
    RequestTimeoutError,
    TooLargeError,
    UnavailableError,
    VersionNotFoundError,
)
from artifactstore.gateway.xml import error_xml

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["S3_ERRORS", "S3Error", "s3_error_for"]

#: S3 error code -> (HTTP status, default message).
S3_ERRORS: Final[Mapping[str, tuple[int, str]]] = {
    "AccessDenied": (403, "Access Denied"),
    "AuthorizationHeaderMalformed": (400, "The authorization header is malformed."),
    "AuthorizationQueryParametersError": (
        400,
        "Error parsing the X-Amz-Credential parameter or other presigned URL parameters.",
    ),
    "BadDigest": (400, "The Content-MD5 or checksum you specified did not match what we received."),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed object size."),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "InvalidAccessKeyId": (
        403,
        "The AWS access key Id you provided does not exist in our records.",
    ),
    "InvalidArgument": (400, "Invalid Argument"),
    "InvalidBucketName": (400, "The specified bucket is not valid."),
    "InvalidRange": (416, "The requested range is not satisfiable"),
    "InvalidRequest": (400, "Invalid Request"),
    "MethodNotAllowed": (405, "The specified method is not allowed against this resource."),
    "NoSuchBucket": (404, "The specified bucket does not exist"),
    "NoSuchKey": (404, "The specified key does not exist."),
    "NotImplemented": (
        501,
        "A header or operation you provided implies functionality that is not implemented.",
    ),
    "NotModified": (304, "Not Modified"),
    "OperationAborted": (409, "A conflicting conditional operation is in progress."),
    "PreconditionFailed": (412, "At least one of the preconditions you specified did not hold."),
    "RequestTimeout": (
        400,
        (
            "Your socket connection to the server was not read from or written to within "
            "the timeout period."
        ),
    ),
    "RequestTimeTooSkewed": (
        403,
        "The difference between the request time and the server's time is too large.",
    ),
    "ServiceUnavailable": (503, "Service is unable to handle request."),
    "SignatureDoesNotMatch": (
        403,
        "The request signature we calculated does not match the signature you provided.",
    ),
    "SlowDown": (503, "Please reduce your request rate."),
}

# Most specific first: the first class the error is an instance of wins.
_FAMILY_TO_CODE: Final[tuple[tuple[type[ArtifactStoreError], str], ...]] = (
    (PackageNotFoundError, "NoSuchBucket"),
    (VersionNotFoundError, "NoSuchKey"),
    (FileNotInVersionError, "NoSuchKey"),
    (BlobNotFoundError, "NoSuchKey"),
    (NotFoundError, "NoSuchKey"),
    (InvalidRangeError, "InvalidRange"),
    (TooLargeError, "EntityTooLarge"),
    (InvalidInputError, "InvalidArgument"),
    (AuthError, "AccessDenied"),
    (ConflictError, "OperationAborted"),
    (UnavailableError, "ServiceUnavailable"),
    (RequestTimeoutError, "RequestTimeout"),
    (IntegrityError, "InternalError"),
)


class S3Error(Exception):
    """Raised inside the gateway to answer with an S3 error document.

    ``code`` is an S3 error code; ``status`` defaults to the table's;
    ``extra`` holds additional Error elements (``BucketName``, ``Key``,
    ``ActualObjectSize``, ...) in order.
    """

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        status: int | None = None,
        resource: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        default_status, default_message = S3_ERRORS.get(code, (500, code))
        self.code = code
        self.message = message if message is not None else default_message
        self.status = status if status is not None else default_status
        self.resource = resource
        self.extra: dict[str, str] = dict(extra or {})
        super().__init__(f"{code}: {self.message}")

    def to_xml(self, *, request_id: str | None = None, resource: str | None = None) -> bytes:
        """The S3 Error document for this error (``resource`` overrides the stored one)."""
        return error_xml(
            self.code,
            self.message,
            resource=resource if resource is not None else self.resource,
            request_id=request_id,
            extra=self.extra,
        )


def s3_error_for(exc: Exception, *, resource: str | None = None) -> S3Error:
    """Translate any exception into the S3Error the gateway answers with.

    An ``S3Error`` passes through; an ``ArtifactStoreError`` maps by family
    (its message is kept, as our messages are written for users); anything
    else is an ``InternalError`` with the generic message, so internals never
    leak. The database being away (``db.outage``) is ``ServiceUnavailable``.
    Never raises.
    """
    if isinstance(exc, S3Error):
        return exc
    exc = database_outage(exc) or exc
    if isinstance(exc, TimeoutError):  # a statement past database.command_timeout_seconds
        exc = UnavailableError("a dependency gave no answer in time")
    if isinstance(exc, ArtifactStoreError):
        for family, code in _FAMILY_TO_CODE:
            if isinstance(exc, family):
                extra: dict[str, str] = {}
                if isinstance(exc, InvalidRangeError) and "size" in exc.detail:
                    extra["ActualObjectSize"] = str(exc.detail["size"])
                return S3Error(code, exc.message, resource=resource, extra=extra)
    return S3Error("InternalError", resource=resource)
