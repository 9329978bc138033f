"""AWS Signature Version 2 verification for S3 reads (boto3's default presigned URLs).

Owns: the SigV2 string to sign (verb, ``Content-MD5``, ``Content-Type``,
``Date`` or ``Expires``, the canonicalised ``x-amz-*`` headers, the
canonicalised resource with its signed sub-resources), both forms of the
scheme, ``Authorization: AWS <key>:<base64 HMAC-SHA1>`` (with the 15-minute
clock check, ``x-amz-date`` overriding ``Date``) and query-string auth
(``AWSAccessKeyId``, ``Signature``, ``Expires``; refused once expired), and
the constant-time comparison. Credentials are the SigV4 ones. It does not
decide which scheme a request uses (``sigbase.detect_scheme``) or what a
principal may do.

Spec: "Signing and authenticating REST requests" and "Query string request
authentication alternative" (Signature Version 2) in the Amazon S3 developer
guide. The resource is ``/<bucket>`` plus the path as sent for
virtual-hosted requests (the bucket comes from ``Host``), the path as sent
for path-style ones, then the sub-resources of ``SUBRESOURCES`` in the
query, sorted by name, values decoded. That list is botocore's
(``HmacV1Auth.QSAOfInterest``), a superset of the one AWS documents; other
parameters (``prefix``, ``list-type``, ...) are not signed.

Like ``sigv4.py``, a signature is accepted if it matches one of a few forms
of the same wire bytes: the path as sent or re-encoded per segment (and a
path-style ``/bucket`` with the slash S3 and botocore add), ``+`` in
a sub-resource value kept or read as a space, and, when both ``x-amz-date``
and ``Date`` are sent, the Date line empty (the spec) or ``Date`` (what
botocore signs). Every candidate is a function of the received bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import unquote, unquote_plus

from artifactstore.gateway.sigbase import (
    DEFAULT_ALLOWED_SKEW,
    ENCODING,
    ERRORS,
    Scheme,
    SignatureError,
    check_skew,
    detect_scheme,
    digests_match,
    expired,
    header_pairs,
    parse_amz_date,
    parse_http_date,
    parse_query,
    reencoded_uri,
    require_secret,
    signature_mismatch,
    text,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from artifactstore.gateway.sigbase import HeaderInput, SecretLookup

__all__ = [
    "QUERY_PARAMS",
    "SUBRESOURCES",
    "VerifiedV2",
    "canonical_amz_headers",
    "canonical_resource",
    "sign",
    "string_to_sign",
    "verify_v2",
]

#: Query parameters that are part of the signed resource (botocore's list).
SUBRESOURCES = frozenset(
    {
        "accelerate",
        "acl",
        "analytics",
        "cors",
        "defaultObjectAcl",
        "delete",
        "inventory",
        "lifecycle",
        "location",
        "logging",
        "metrics",
        "notification",
        "object-lock",
        "partNumber",
        "policy",
        "replication",
        "requestPayment",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "response-content-language",
        "response-content-type",
        "response-expires",
        "restore",
        "select",
        "select-type",
        "storageClass",
        "tagging",
        "torrent",
        "uploadId",
        "uploads",
        "versionId",
        "versioning",
        "versions",
        "website",
    }
)
#: The parameters of query-string auth, all required.
QUERY_PARAMS = ("AWSAccessKeyId", "Signature", "Expires")
_EXPIRES_RE = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True, slots=True)
class VerifiedV2:
    """A SigV2 request whose signature matched."""

    access_key_id: str
    presigned: bool


# --- the string to sign ----------------------------------------------------


def canonical_amz_headers(pairs: Iterable[tuple[str, str]]) -> str:
    """One ``name:value`` line per ``x-amz-*`` header, sorted; repeats join with ``,``."""
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        lowered = name.lower().strip()
        if lowered.startswith("x-amz-"):
            grouped.setdefault(lowered, []).append(value.strip())
    return "".join(f"{name}:{','.join(grouped[name])}\n" for name in sorted(grouped))


def canonical_resource(
    raw_path: str | bytes,
    raw_query: str | bytes,
    *,
    bucket_in_host: str | None = None,
    plus_is_space: bool = False,
) -> str:
    """The CanonicalizedResource: ``/bucket`` (virtual host), the path as sent, sub-resources.

    Sub-resources keep their form (``?acl`` or ``?versionId=x``), values
    decoded, sorted by name (stable, so repeats keep their order).
    """
    path = text(raw_path) or "/"
    resource = f"/{bucket_in_host}{path}" if bucket_in_host is not None else path
    decode = unquote_plus if plus_is_space else unquote
    subresources: list[tuple[str, str]] = []
    for part in text(raw_query).split("&"):
        name, sep, value = part.partition("=")
        if name in SUBRESOURCES:
            decoded = decode(value, ENCODING, ERRORS)
            subresources.append((name, f"{name}={decoded}" if sep else name))
    subresources.sort(key=lambda item: item[0])
    if subresources:
        resource += "?" + "&".join(item for _, item in subresources)
    return resource


def string_to_sign(
    method: str,
    *,
    content_md5: str,
    content_type: str,
    date: str,
    amz_headers: str,
    resource: str,
) -> str:
    """VERB, Content-MD5, Content-Type, Date (or Expires), amz headers and resource."""
    return f"{method.upper()}\n{content_md5}\n{content_type}\n{date}\n{amz_headers}{resource}"


def sign(secret_access_key: str, to_sign: str) -> str:
    """Base64 of HMAC-SHA1 over the string to sign: the SigV2 signature."""
    digest = hmac.new(
        secret_access_key.encode(ENCODING), to_sign.encode(ENCODING, ERRORS), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode("ascii")


# --- verification ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Claim:
    access_key_id: str
    signature: str
    dates: tuple[str, ...]  # the Date line's candidates
    amz_headers: str
    content_md5: str
    content_type: str
    presigned: bool


def _first(grouped: dict[str, list[str]], name: str) -> str | None:
    values = grouped.get(name)
    return values[0].strip() if values else None


def _request_time(value: str) -> datetime:
    """``x-amz-date`` as an HTTP date or in ISO 8601 basic format."""
    if value[:1].isdigit():
        return parse_amz_date(value, "AccessDenied")
    return parse_http_date(value)


def _header_claim(
    grouped: dict[str, list[str]], pairs: list[tuple[str, str]], now: datetime, skew: timedelta
) -> _Claim:
    authorization = grouped["authorization"]
    if len(authorization) > 1:
        raise SignatureError("AccessDenied", "more than one Authorization header")
    key, sep, sig = authorization[0].strip()[len("AWS ") :].strip().partition(":")
    if not sep or not key or not sig:
        raise SignatureError(
            "InvalidArgument",
            "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature",
        )
    amz_date, date = _first(grouped, "x-amz-date"), _first(grouped, "date")
    if amz_date is not None:
        check_skew(_request_time(amz_date), amz_date, now, skew)
        dates = ("",) if date is None else ("", date)
    elif date is not None:
        check_skew(parse_http_date(date), date, now, skew)
        dates = (date,)
    else:
        raise SignatureError(
            "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header"
        )
    return _Claim(
        key,
        sig,
        dates,
        canonical_amz_headers(pairs),
        _first(grouped, "content-md5") or "",
        _first(grouped, "content-type") or "",
        presigned=False,
    )


def _query_claim(
    raw_query: str | bytes,
    grouped: dict[str, list[str]],
    pairs: list[tuple[str, str]],
    now: datetime,
) -> _Claim:
    query = parse_query(raw_query)
    params = dict(query)
    counts = Counter(name for name, _ in query)
    if any(counts[name] != 1 for name in QUERY_PARAMS):
        raise SignatureError(
            "AccessDenied",
            "Query-string authentication requires the Signature, Expires and AWSAccessKeyId "
            "parameters, once each",
        )
    expires = params["Expires"]
    if not _EXPIRES_RE.fullmatch(expires):
        raise SignatureError("AccessDenied", "Expires must be a time in seconds since the epoch")
    if now.timestamp() > int(expires):
        raise expired(int(expires), now)
    # A presigner moves x-amz-*, Content-Type and Content-MD5 into the query;
    # a header of the same name, if one is sent as well, is what counts.
    amz = pairs + [(name.lower(), v) for name, v in query if name.lower() not in grouped]
    return _Claim(
        params["AWSAccessKeyId"],
        # Base64 has no spaces: a '+' sent unencoded was read as one.
        params["Signature"].replace(" ", "+"),
        (expires,),
        canonical_amz_headers(amz),
        _first(grouped, "content-md5") or params.get("content-md5", ""),
        _first(grouped, "content-type") or params.get("content-type", ""),
        presigned=True,
    )


def verify_v2(
    method: str,
    raw_path: str | bytes,
    raw_query: str | bytes,
    headers: HeaderInput,
    lookup: SecretLookup,
    *,
    now: datetime,
    bucket_in_host: str | None = None,
    allowed_skew: timedelta = DEFAULT_ALLOWED_SKEW,
) -> VerifiedV2:
    """Check a request's SigV2 signature (header or query form) and name the signer.

    ``raw_path`` and ``raw_query`` are as received; ``bucket_in_host`` is the
    bucket a virtual-hosted request names in ``Host`` (None for path style).
    A naive ``now`` is taken as UTC.

    Raises:
        SignatureError: ``AccessDenied`` when authentication is missing,
            malformed or expired; ``InvalidArgument`` for a malformed
            header or two schemes at once; ``RequestTimeTooSkewed``;
            ``InvalidAccessKeyId``; ``SignatureDoesNotMatch``.
    """
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now
    pairs = header_pairs(headers)
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    scheme = detect_scheme(raw_query, pairs)
    if scheme is Scheme.V2_HEADER:
        claim = _header_claim(grouped, pairs, now, allowed_skew)
    elif scheme is Scheme.V2_QUERY:
        claim = _query_claim(raw_query, grouped, pairs, now)
    else:
        raise SignatureError("AccessDenied", "Access Denied: the request is not signed (SigV2)")
    secret = require_secret(lookup, claim.access_key_id)
    expected = [
        sign(
            secret,
            string_to_sign(
                method,
                content_md5=claim.content_md5,
                content_type=claim.content_type,
                date=date,
                amz_headers=claim.amz_headers,
                resource=resource,
            ),
        )
        for date in claim.dates
        for resource in _resources(raw_path, raw_query, bucket_in_host)
    ]
    if not digests_match(expected, claim.signature):
        raise signature_mismatch(claim.access_key_id)
    return VerifiedV2(claim.access_key_id, claim.presigned)


def _resources(raw_path: str | bytes, raw_query: str | bytes, bucket: str | None) -> list[str]:
    """The canonical resource's candidate forms (module docstring), without repeats."""
    paths = {text(raw_path) or "/", reencoded_uri(raw_path)}
    if bucket is None:
        # A path-style bucket request (``/bucket``) signs ``/bucket/``, as botocore does.
        paths |= {f"{path}/" for path in paths if path.count("/") == 1 and path != "/"}
    forms = {
        canonical_resource(path, raw_query, bucket_in_host=bucket, plus_is_space=plus)
        for path in paths
        for plus in (False, True)
    }
    return sorted(forms)
