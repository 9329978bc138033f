"""What every S3 signature scheme shares, and the one decision of which scheme a request uses.

Owns: reading headers and the query exactly as received (``parse_query``
decodes the way signatures are checked), the error type, the secret
look-up (``InvalidAccessKeyId``), the clock checks (Date skew and expiry,
with the fields S3 puts in those errors), the ``SignatureDoesNotMatch``
error, and ``detect_scheme``: SigV4 header, SigV4 query, SigV2 header,
SigV2 query or none, refusing a request that mixes them. It does not build
any string to sign; that is ``sigv4*.py`` and ``sigv2.py``.

Spec: "Authenticating Requests (AWS Signature Version 4)" and "Signing and
authenticating REST requests" (Signature Version 2) in the Amazon S3 API
reference; the error fields follow what S3 answers.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from urllib.parse import quote, unquote, unquote_plus

from artifactstore.gateway.errors import S3Error

__all__ = [
    "DEFAULT_ALLOWED_SKEW",
    "HeaderInput",
    "Scheme",
    "SecretLookup",
    "SignatureError",
    "check_skew",
    "detect_scheme",
    "digests_match",
    "expired",
    "has_signature",
    "header_map",
    "header_pairs",
    "parse_amz_date",
    "parse_http_date",
    "parse_query",
    "query_pairs",
    "reencoded_uri",
    "require_secret",
    "signature_mismatch",
    "text",
    "uri_encode",
]

_AMZ_DATE_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z")

HeaderInput = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]
SecretLookup = Callable[[str], str | None]

DEFAULT_ALLOWED_SKEW = timedelta(minutes=15)
ENCODING = "utf-8"
ERRORS = "surrogateescape"  # bytes that are not UTF-8 survive the round trip
# RFC 3986 unreserved characters; AWS encodes everything else as %XX (uppercase).
_UNRESERVED = "-_.~"
_V4_QUERY_MARKERS = frozenset({"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"})
_V2_QUERY_MARKERS = frozenset({"AWSAccessKeyId", "Signature"})
_LAST_ISO_SECOND = 253402300799  # 9999-12-31T23:59:59Z, the last time strftime can print


class SignatureError(S3Error):
    """Raised when a request's authentication (any scheme) is missing, malformed or wrong.

    ``code`` is the S3 error code the gateway answers with; messages never
    contain the secret, the expected signature or the string to sign.
    """


class Scheme(StrEnum):
    """How a request is signed."""

    NONE = "none"
    V4_HEADER = "v4-header"
    V4_QUERY = "v4-query"
    V2_HEADER = "v2-header"
    V2_QUERY = "v2-query"


# --- the request as received ----------------------------------------------


def text(value: str | bytes) -> str:
    """Bytes as text without loss (UTF-8, other bytes kept as surrogates)."""
    return value.decode(ENCODING, ERRORS) if isinstance(value, bytes) else value


def uri_encode(value: str, *, keep_slash: bool = False) -> str:
    """AWS ``UriEncode``: UTF-8, unreserved characters kept, the rest %XX uppercase."""
    safe = _UNRESERVED + ("/" if keep_slash else "")
    return quote(value, safe=safe, encoding=ENCODING, errors=ERRORS)


def header_pairs(headers: HeaderInput) -> list[tuple[str, str]]:
    """``(lower-cased name, value)`` in the order received; repeats kept."""
    items: Iterable[tuple[str | bytes, str | bytes]] = (
        headers.items() if isinstance(headers, Mapping) else headers
    )
    return [(text(name).lower().strip(), text(value)) for name, value in items]


def header_map(headers: HeaderInput) -> dict[str, list[str]]:
    """Header values grouped by lower-cased name, in the order received."""
    grouped: dict[str, list[str]] = {}
    for name, value in header_pairs(headers):
        grouped.setdefault(name, []).append(value)
    return grouped


def reencoded_uri(raw_path: str | bytes) -> str:
    """Each segment decoded and re-encoded per AWS rules; ``%2F`` stays inside its segment."""
    path = text(raw_path) or "/"
    return "/".join(uri_encode(unquote(seg, ENCODING, ERRORS)) for seg in path.split("/"))


def query_pairs(raw_query: str | bytes) -> list[tuple[str, str]]:
    """Raw ``name[=value]`` pairs as sent; empty parts dropped."""
    pairs: list[tuple[str, str]] = []
    for part in text(raw_query).split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((name, value))
    return pairs


def parse_query(raw_query: str | bytes) -> list[tuple[str, str]]:
    """Decode a query string the way the signature is checked: ``+`` is a space.

    The gateway should read its parameters with this (or an equivalent form
    decoder such as Starlette's), so that what it serves is what was signed.
    Parameters without ``=`` have an empty value; order and repeats are kept.
    """
    return [
        (unquote_plus(n, ENCODING, ERRORS), unquote_plus(v, ENCODING, ERRORS))
        for n, v in query_pairs(raw_query)
    ]


# --- which scheme ----------------------------------------------------------


def has_signature(raw_query: str | bytes, headers: HeaderInput) -> bool:
    """True when the request carries any signature material; False means anonymous.

    Any ``Authorization`` header, any of ``X-Amz-Algorithm``,
    ``X-Amz-Credential``, ``X-Amz-Signature`` (SigV4) or ``AWSAccessKeyId``,
    ``Signature`` (SigV2) in the query counts: a request that tries to sign
    and fails must not fall back to anonymous.
    """
    if any(name == "authorization" for name, _ in header_pairs(headers)):
        return True
    markers = _V4_QUERY_MARKERS | _V2_QUERY_MARKERS
    return any(name in markers for name, _ in parse_query(raw_query))


def detect_scheme(raw_query: str | bytes, headers: HeaderInput) -> Scheme:
    """The one place that decides which scheme verifies a request.

    An ``Authorization`` header starting with ``AWS `` is SigV2, any other
    is SigV4 (whose parser refuses what it does not know). In the query,
    ``X-Amz-*`` markers mean SigV4, ``AWSAccessKeyId``/``Signature`` SigV2.

    Raises:
        SignatureError: ``InvalidArgument`` when more than one form is present.
    """
    authorization = [v for n, v in header_pairs(headers) if n == "authorization"]
    names = {name for name, _ in parse_query(raw_query)}
    v4_query = not _V4_QUERY_MARKERS.isdisjoint(names)
    v2_query = not _V2_QUERY_MARKERS.isdisjoint(names)
    if bool(authorization) + v4_query + v2_query > 1:
        raise SignatureError("InvalidArgument", "Only one auth mechanism allowed")
    if authorization:
        v2 = authorization[0].lstrip().startswith("AWS ")
        return Scheme.V2_HEADER if v2 else Scheme.V4_HEADER
    if v4_query:
        return Scheme.V4_QUERY
    return Scheme.V2_QUERY if v2_query else Scheme.NONE


# --- shared checks ---------------------------------------------------------


def parse_amz_date(value: str, code: str) -> datetime:
    """``yyyyMMddTHHmmssZ`` (``x-amz-date``, both schemes) as an aware UTC time, else ``code``."""
    if not _AMZ_DATE_RE.fullmatch(value):
        raise SignatureError(
            code, "X-Amz-Date must be in the ISO 8601 basic format yyyyMMddTHHmmssZ"
        )
    try:
        return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise SignatureError(code, "X-Amz-Date is not a valid date") from exc


def parse_http_date(value: str) -> datetime:
    """An HTTP date (RFC 9110 IMF-fixdate, or the obsolete forms) as an aware UTC time.

    Raises:
        SignatureError: ``AccessDenied`` when the value is not a date.
    """
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError) as exc:
        raise SignatureError("AccessDenied", "the Date header is not a valid HTTP date") from exc
    # HTTP dates are GMT; "-0000" parses naive, which must not mean local time.
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def check_skew(signed_at: datetime, request_time: str, now: datetime, skew: timedelta) -> None:
    """Refuse a header-signed request whose date is further than ``skew`` from ``now``.

    Raises:
        SignatureError: ``RequestTimeTooSkewed``.
    """
    if abs(now - signed_at) > skew:
        raise SignatureError(
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
            extra={
                "RequestTime": request_time,
                "ServerTime": now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ"),
                "MaxAllowedSkewMilliseconds": str(int(skew.total_seconds() * 1000)),
            },
        )


def expired(expiry_epoch: int, now: datetime) -> SignatureError:
    """The ``AccessDenied`` "Request has expired" error, with S3's Expires and ServerTime."""
    extra: dict[str, str] = {}
    if 0 <= expiry_epoch <= _LAST_ISO_SECOND:
        expiry = datetime.fromtimestamp(expiry_epoch, UTC)
        extra["Expires"] = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
    extra["ServerTime"] = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return SignatureError("AccessDenied", "Request has expired", extra=extra)


def require_secret(lookup: SecretLookup, access_key_id: str) -> str:
    """The secret of an access key id.

    Raises:
        SignatureError: ``InvalidAccessKeyId`` for a key the gateway does not know.
    """
    secret = lookup(access_key_id)
    if secret is None:
        raise SignatureError(
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            extra={"AWSAccessKeyId": access_key_id},
        )
    return secret


def signature_mismatch(access_key_id: str) -> SignatureError:
    """The ``SignatureDoesNotMatch`` error (no string to sign in it: nothing to leak)."""
    return SignatureError(
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
        extra={"AWSAccessKeyId": access_key_id},
    )


def digests_match(expected: Iterable[str], provided: str) -> bool:
    """True when any expected signature equals ``provided``, compared in constant time.

    Every candidate is compared, so the time taken shows nothing about which
    (or how much of one) matched. Compared as bytes: ``provided`` may hold
    any text a client sent.
    """
    given = provided.encode(ENCODING, ERRORS)
    matched = False
    for candidate in expected:
        matched |= hmac.compare_digest(candidate.encode(ENCODING, ERRORS), given)
    return matched
