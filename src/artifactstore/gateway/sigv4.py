"""AWS Signature Version 4 verification for S3 requests: the checks and the verdict.

Owns: ``verify_request`` (which of the two SigV4 forms, the clock and the
expiry, the secret, and the signature compared in constant time over the
canonical forms below), and the public names of the SigV4 kernel, re-exported
from ``sigv4_canonical`` (the algorithm), ``sigv4_header`` and
``sigv4_query`` (reading each form; ``sign_request`` and ``presign_query``
sign for tests and tools). Which scheme a request uses (SigV4, SigV2 or
none) is decided once, in ``sigbase.detect_scheme``. It does not read
request bodies (the read gateway only serves GET and HEAD, whose bodies are
empty), decode ``aws-chunked`` payloads, or decide which operations a
principal may perform; it names who signed, or refuses.

Spec: "Authenticating Requests (AWS Signature Version 4)" in the Amazon S3 API
reference, and the generic SigV4 process in the IAM user guide. The S3
specifics are in the comments at the spot: the path is neither normalised nor
double-encoded, the payload hash is whatever ``x-amz-content-sha256`` says
(``UNSIGNED-PAYLOAD`` or a streaming marker are signed as given), presigned
URLs sign ``UNSIGNED-PAYLOAD``.

Canonicalisation is written on the standard library only, rather than
reused from botocore: STYLE 1 keeps botocore behind ``storage/s3.py``, and a
verifier must canonicalise what arrived on the wire, whereas botocore's
helpers canonicalise what botocore itself is about to send. Botocore is the
reference signer in the tests instead (``S3SigV4Auth``, ``S3SigV4QueryAuth``).

Because clients disagree on how they encode what they sign, a signature is
accepted if it matches one of at most four canonical forms of the same wire
bytes: the path as received or re-encoded per segment (as MinIO does), and
the query decoded and re-encoded per AWS rules (``+`` read as a space, like
the form decoding the gateway uses to read parameters) or taken as sent and
only sorted (as botocore signs it). Every candidate is a function of the
received bytes, so this widens no forgery surface.

AWS test-suite vectors covered (``tests/unit/test_sigv4.py``, service
``service``): get-vanilla, get-vanilla-query, get-vanilla-empty-query-key,
get-vanilla-query-order-key, get-vanilla-query-order-key-case,
get-vanilla-query-order-value, get-vanilla-query-unreserved,
get-vanilla-utf8-query, get-unreserved, get-utf8, get-space,
get-header-key-duplicate, get-header-value-order, get-header-value-trim,
post-vanilla, post-vanilla-query, post-header-key-case, post-header-key-sort,
post-header-value-case, post-sts-header-before, post-sts-header-after. Not
covered: the path-normalisation group (get-relative, get-slash*, ...;
S3 never normalises), get-header-value-multiline (obsolete line folding that
HTTP servers reject) and the form-body posts (bodies are out of scope).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from artifactstore.gateway.sigbase import (
    DEFAULT_ALLOWED_SKEW,
    HeaderInput,
    Scheme,
    SecretLookup,
    SignatureError,
    check_skew,
    detect_scheme,
    digests_match,
    expired,
    has_signature,
    header_map,
    parse_query,
    reencoded_uri,
    require_secret,
    signature_mismatch,
)
from artifactstore.gateway.sigv4_canonical import (
    ALGORITHM,
    EMPTY_SHA256,
    MAX_PRESIGNED_EXPIRES,
    STREAMING_PAYLOAD_MARKERS,
    UNSIGNED_PAYLOAD,
    Claim,
    CredentialScope,
    as_sent_query_string,
    canonical_headers,
    canonical_query_string,
    canonical_request,
    canonical_uri,
    signature,
    signing_key,
    string_to_sign,
)
from artifactstore.gateway.sigv4_header import header_claim, sign_request
from artifactstore.gateway.sigv4_query import PRESIGN_PARAMS, presign_query, query_claim

__all__ = [
    "ALGORITHM",
    "DEFAULT_ALLOWED_SKEW",
    "EMPTY_SHA256",
    "MAX_PRESIGNED_EXPIRES",
    "STREAMING_PAYLOAD_MARKERS",
    "UNSIGNED_PAYLOAD",
    "CredentialScope",
    "HeaderInput",
    "SecretLookup",
    "SigV4Error",
    "VerifiedRequest",
    "canonical_headers",
    "canonical_query_string",
    "canonical_request",
    "canonical_uri",
    "has_signature",
    "parse_query",
    "presign_query",
    "sign_request",
    "signature",
    "signing_key",
    "string_to_sign",
    "verify_request",
]

#: The error every scheme raises; the old name stays for callers of this module.
SigV4Error = SignatureError


@dataclass(frozen=True, slots=True)
class VerifiedRequest:
    """A request whose signature matched: who signed it and what they signed."""

    access_key_id: str
    region: str
    presigned: bool
    payload_hash: str
    signed_headers: tuple[str, ...]
    signed_at: datetime


def _check_time(claim: Claim, params: dict[str, str], now: datetime, skew: timedelta) -> None:
    if not claim.presigned:
        check_skew(claim.signed_at, claim.amz_date, now, skew)
        return
    # A presigned URL is valid from its date (allowing skew) until date + expires.
    if claim.signed_at - skew > now:
        raise SignatureError("AccessDenied", "Request is not valid yet")
    expiry = claim.signed_at + timedelta(seconds=int(params["X-Amz-Expires"]))
    if now > expiry:
        raise expired(int(expiry.timestamp()), now)


def _claim(
    scheme: Scheme,
    raw_query: str | bytes,
    grouped: dict[str, list[str]],
    *,
    service: str,
    region: str | None,
) -> tuple[Claim, dict[str, str]]:
    """The claim of whichever SigV4 form the request uses, and its decoded query."""
    query = parse_query(raw_query)
    params = dict(query)
    if scheme in {Scheme.V4_HEADER, Scheme.V2_HEADER}:  # a V2 header is refused by the parser
        authorization = grouped["authorization"]
        if len(authorization) > 1:
            raise SignatureError("AccessDenied", "more than one Authorization header")
        return header_claim(authorization[0], grouped, service=service, region=region), params
    if scheme is not Scheme.V4_QUERY:
        raise SignatureError("AccessDenied", "Access Denied: the request is not signed (SigV4)")
    counts = Counter(name for name, _ in query)
    repeated = [name for name in PRESIGN_PARAMS if counts[name] > 1]
    if repeated:
        raise SignatureError(
            "AuthorizationQueryParametersError", f"repeated parameters: {', '.join(repeated)}"
        )
    return query_claim(params, service=service, region=region), params


def verify_request(
    method: str,
    raw_path: str | bytes,
    raw_query: str | bytes,
    headers: HeaderInput,
    lookup: SecretLookup,
    *,
    now: datetime,
    allowed_skew: timedelta = DEFAULT_ALLOWED_SKEW,
    service: str = "s3",
    region: str | None = None,
    double_encode_path: bool = False,
) -> VerifiedRequest:
    """Check a request's SigV4 signature (header or presigned form) and name the signer.

    ``raw_path`` is the path as received, still percent-encoded (ASGI
    ``scope["raw_path"]``), without the query; ``raw_query`` is the query
    string as received. ``region`` None accepts any region in the scope.
    A naive ``now`` is taken as UTC.

    Raises:
        SigV4Error: ``AccessDenied`` when authentication is missing or
            malformed, or a presigned URL has expired; ``InvalidArgument``
            for two forms at once or a bad payload hash;
            ``AuthorizationHeaderMalformed`` or
            ``AuthorizationQueryParametersError`` for a bad credential scope
            or presigned parameters; ``InvalidAccessKeyId``;
            ``RequestTimeTooSkewed``; ``SignatureDoesNotMatch``.
    """
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now
    grouped = header_map(headers)
    scheme = detect_scheme(raw_query, headers)
    claim, params = _claim(scheme, raw_query, grouped, service=service, region=region)
    missing = [name for name in claim.signed_headers if name not in grouped]
    if missing:
        raise SignatureError("AccessDenied", f"signed headers are absent: {', '.join(missing)}")
    _check_time(claim, params, now, allowed_skew)
    secret = require_secret(lookup, claim.scope.access_key_id)
    key = signing_key(secret, claim.scope.date, claim.scope.region, claim.scope.service)
    expected = _candidate_signatures(
        claim,
        key,
        method=method,
        raw_path=raw_path,
        raw_query=raw_query,
        headers=grouped,
        double_encode_path=double_encode_path,
    )
    if not digests_match(expected, claim.signature):
        raise signature_mismatch(claim.scope.access_key_id)
    return VerifiedRequest(
        access_key_id=claim.scope.access_key_id,
        region=claim.scope.region,
        presigned=claim.presigned,
        payload_hash=claim.payload_hash,
        signed_headers=claim.signed_headers,
        signed_at=claim.signed_at,
    )


def _candidate_signatures(
    claim: Claim,
    key: bytes,
    *,
    method: str,
    raw_path: str | bytes,
    raw_query: str | bytes,
    headers: dict[str, list[str]],
    double_encode_path: bool,
) -> list[str]:
    """The signature of each canonical form of the received request (module docstring)."""
    exclude = ("X-Amz-Signature",) if claim.presigned else ()
    paths = {canonical_uri(raw_path, double_encode=double_encode_path)}
    if not double_encode_path:
        paths.add(reencoded_uri(raw_path))
    queries = {
        canonical_query_string(raw_query, exclude=exclude),
        as_sent_query_string(raw_query, exclude=exclude),
    }
    header_block = canonical_headers(
        [(name, value) for name, values in headers.items() for value in values],
        claim.signed_headers,
    )
    names = ";".join(sorted(set(claim.signed_headers)))
    expected = []
    for path in sorted(paths):
        for query in sorted(queries):
            canonical = f"{method.upper()}\n{path}\n{query}\n{header_block}\n{names}\n"
            canonical += claim.payload_hash
            to_sign = string_to_sign(claim.amz_date, claim.scope.scope, canonical)
            expected.append(signature(key, to_sign))
    return expected
