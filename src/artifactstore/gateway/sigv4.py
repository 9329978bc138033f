"""AWS Signature Version 4 verification for S3 requests.

Owns: parsing the ``Authorization`` header and presigned query parameters,
building the canonical request and string to sign, deriving the signing key,
checking the clock and the expiry, and comparing signatures in constant time.
Also a small signer (``sign_request``, ``presign_query``) used by tests and
tools. It does not read request bodies (the read gateway only serves GET and
HEAD, whose bodies are empty), decode ``aws-chunked`` payloads, or decide
which operations a principal may perform; it names who signed, or refuses.

Spec: "Authenticating Requests (AWS Signature Version 4)" in the Amazon S3 API
reference, and the generic SigV4 process in the IAM user guide. The S3
specifics are in the comments at the spot: the path is neither normalised nor
double-encoded, the payload hash is whatever ``x-amz-content-sha256`` says
(``UNSIGNED-PAYLOAD`` or a streaming marker are signed as given), presigned
URLs sign ``UNSIGNED-PAYLOAD``.

Canonicalisation is written here, on the standard library only, rather than
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

import hashlib
import hmac
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote, unquote_plus

from artifactstore.gateway.errors import S3Error

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

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
STREAMING_PAYLOAD_MARKERS = frozenset(
    {
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
        "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
        "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER",
    }
)
DEFAULT_ALLOWED_SKEW = timedelta(minutes=15)
MAX_PRESIGNED_EXPIRES = 7 * 24 * 3600  # 604800 s, the S3 maximum

HeaderInput = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]
SecretLookup = Callable[[str], str | None]

# RFC 3986 unreserved characters; AWS encodes everything else as %XX (uppercase).
_UNRESERVED = "-_.~"
_AMZ_DATE_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_EXPIRES_RE = re.compile(r"[0-9]{1,6}")
_SIGNATURE_RE = re.compile(r"[0-9a-f]{64}")
_SHA256_HEX_RE = re.compile(r"[0-9a-fA-F]{64}")
_SIGNED_HEADERS_RE = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+(;[a-z0-9!#$%&'*+.^_`|~-]+)*")
_PRESIGN_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"  # bytes that are not UTF-8 survive the round trip


class SigV4Error(S3Error):
    """Raised when a request's SigV4 authentication is missing, malformed or wrong.

    ``code`` is the S3 error code the gateway answers with; messages never
    contain the secret, the expected signature or the string to sign.
    """


@dataclass(frozen=True, slots=True)
class CredentialScope:
    """``<access key>/<yyyymmdd>/<region>/<service>/aws4_request``, parsed."""

    access_key_id: str
    date: str
    region: str
    service: str

    @property
    def scope(self) -> str:
        """The scope without the access key, as it appears in the string to sign."""
        return f"{self.date}/{self.region}/{self.service}/{TERMINATOR}"


@dataclass(frozen=True, slots=True)
class VerifiedRequest:
    """A request whose signature matched: who signed it and what they signed."""

    access_key_id: str
    region: str
    presigned: bool
    payload_hash: str
    signed_headers: tuple[str, ...]
    signed_at: datetime


# --- canonicalisation ------------------------------------------------------


def _text(value: str | bytes) -> str:
    return value.decode(_ENCODING, _ERRORS) if isinstance(value, bytes) else value


def _uri_encode(value: str, *, keep_slash: bool = False) -> str:
    """AWS ``UriEncode``: UTF-8, unreserved characters kept, the rest %XX uppercase."""
    safe = _UNRESERVED + ("/" if keep_slash else "")
    return quote(value, safe=safe, encoding=_ENCODING, errors=_ERRORS)


def _header_pairs(headers: HeaderInput) -> list[tuple[str, str]]:
    items: Iterable[tuple[str | bytes, str | bytes]] = (
        headers.items() if isinstance(headers, Mapping) else headers
    )
    return [(_text(name).lower().strip(), _text(value)) for name, value in items]


def _header_map(headers: HeaderInput) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in _header_pairs(headers):
        grouped.setdefault(name, []).append(value)
    return grouped


def canonical_uri(raw_path: str | bytes, *, double_encode: bool = False) -> str:
    """The CanonicalURI of a path as received (percent-encoded).

    S3 (the default) signs the path exactly as sent: not normalised, not
    encoded again. Other AWS services encode the path once more
    (``double_encode``); feeding an unencoded path with ``double_encode``
    reproduces the AWS test suite's canonical paths. An empty path is ``/``.
    """
    path = _text(raw_path) or "/"
    return _uri_encode(path, keep_slash=True) if double_encode else path


def _reencoded_uri(raw_path: str | bytes) -> str:
    """Each segment decoded and re-encoded per AWS rules; ``%2F`` stays inside its segment."""
    path = _text(raw_path) or "/"
    return "/".join(_uri_encode(unquote(seg, _ENCODING, _ERRORS)) for seg in path.split("/"))


def _query_pairs(raw_query: str | bytes) -> list[tuple[str, str]]:
    """Raw ``name[=value]`` pairs as sent; empty parts dropped."""
    pairs: list[tuple[str, str]] = []
    for part in _text(raw_query).split("&"):
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
        (unquote_plus(n, _ENCODING, _ERRORS), unquote_plus(v, _ENCODING, _ERRORS))
        for n, v in _query_pairs(raw_query)
    ]


def canonical_query_string(raw_query: str | bytes, *, exclude: Iterable[str] = ()) -> str:
    """The CanonicalQueryString: decode, encode per AWS rules, sort by name then value.

    Empty values are kept as ``name=``. Names in ``exclude`` (exact, decoded)
    are left out, which is how ``X-Amz-Signature`` leaves a presigned query.
    """
    excluded = set(exclude)
    encoded = sorted(
        (_uri_encode(name), _uri_encode(value))
        for name, value in parse_query(raw_query)
        if name not in excluded
    )
    return "&".join(f"{name}={value}" for name, value in encoded)


def _as_sent_query_string(raw_query: str | bytes, *, exclude: Iterable[str] = ()) -> str:
    """The query's pairs as sent, only sorted (what botocore signs for a URL query)."""
    excluded = set(exclude)
    pairs = sorted(
        (n, v) for n, v in _query_pairs(raw_query) if unquote_plus(n, _ENCODING) not in excluded
    )
    return "&".join(f"{n}={v}" for n, v in pairs)


def canonical_headers(headers: HeaderInput, signed_headers: Iterable[str]) -> str:
    """CanonicalHeaders: one ``name:value`` line per signed header, sorted by name.

    Values are trimmed and inner whitespace runs collapse to one space;
    repeated headers join with ``,`` in the order received.

    Raises:
        KeyError: a signed header is absent from the request.
    """
    grouped = _header_map(headers)
    lines = []
    for name in sorted(set(signed_headers)):
        values = grouped[name]
        lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}\n")
    return "".join(lines)


def canonical_request(
    method: str,
    raw_path: str | bytes,
    raw_query: str | bytes,
    headers: HeaderInput,
    *,
    signed_headers: Iterable[str],
    payload_hash: str,
    double_encode_path: bool = False,
    exclude_query: Iterable[str] = (),
) -> str:
    """The CanonicalRequest (step 1 of signing) in its default, AWS-canonical form.

    Raises:
        KeyError: a signed header is absent from the request.
    """
    names = sorted(set(signed_headers))
    return "\n".join(
        (
            method.upper(),
            canonical_uri(raw_path, double_encode=double_encode_path),
            canonical_query_string(raw_query, exclude=exclude_query),
            canonical_headers(headers, names),
            ";".join(names),
            payload_hash,
        )
    )


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    """The StringToSign (step 2): algorithm, timestamp, scope, hash of the canonical request."""
    digest = hashlib.sha256(canonical.encode(_ENCODING, _ERRORS)).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def signing_key(secret_access_key: str, date: str, region: str, service: str) -> bytes:
    """The derived key (step 3): HMAC chain over date, region, service, terminator."""
    key = ("AWS4" + secret_access_key).encode(_ENCODING)
    for part in (date, region, service, TERMINATOR):
        key = hmac.new(key, part.encode(_ENCODING), hashlib.sha256).digest()
    return key


def signature(key: bytes, to_sign: str) -> str:
    """The hex signature (step 4) of a string to sign under a derived key."""
    return hmac.new(key, to_sign.encode(_ENCODING, _ERRORS), hashlib.sha256).hexdigest()


# --- verification ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Claim:
    """What a request claims, before the signature is checked."""

    scope: CredentialScope
    amz_date: str
    signed_at: datetime
    signed_headers: tuple[str, ...]
    signature: str
    payload_hash: str
    presigned: bool


def has_signature(raw_query: str | bytes, headers: HeaderInput) -> bool:
    """True when the request carries any SigV4 material; False means anonymous.

    Any ``Authorization`` header, or any of ``X-Amz-Algorithm``,
    ``X-Amz-Credential`` or ``X-Amz-Signature`` in the query, counts: a
    request that tries to sign and fails must not fall back to anonymous.
    """
    if any(name == "authorization" for name, _ in _header_pairs(headers)):
        return True
    markers = {"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"}
    return any(name in markers for name, _ in parse_query(raw_query))


def _parse_amz_date(value: str, code: str) -> datetime:
    if not _AMZ_DATE_RE.fullmatch(value):
        raise SigV4Error(code, "X-Amz-Date must be in the ISO 8601 basic format yyyyMMddTHHmmssZ")
    try:
        return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise SigV4Error(code, "X-Amz-Date is not a valid date") from exc


def _parse_credential(
    value: str, *, code: str, amz_date: str, service: str, region: str | None
) -> CredentialScope:
    parts = value.split("/")
    if len(parts) != 5 or not all(parts):  # noqa: PLR2004 - key/date/region/service/terminator
        raise SigV4Error(
            code, "the credential must have the form <key>/<date>/<region>/s3/aws4_request"
        )
    key, date, cred_region, cred_service, terminator = parts
    if date != amz_date[:8]:
        raise SigV4Error(code, f"the credential date {date!r} does not match X-Amz-Date")
    if cred_service != service:
        raise SigV4Error(code, f"the credential service must be {service!r}, not {cred_service!r}")
    if terminator != TERMINATOR:
        raise SigV4Error(code, f"the credential must end in {TERMINATOR!r}")
    if region is not None and cred_region != region:
        raise SigV4Error(
            code,
            f"the region {cred_region!r} is wrong; expecting {region!r}",
            extra={"Region": region},
        )
    return CredentialScope(key, date, cred_region, cred_service)


def _parse_signed_headers(value: str, code: str) -> tuple[str, ...]:
    if not _SIGNED_HEADERS_RE.fullmatch(value):
        raise SigV4Error(code, "SignedHeaders must be lowercase names separated by ';'")
    names = tuple(value.split(";"))
    if "host" not in names:
        raise SigV4Error(code, "the host header must be signed")
    return names


def _payload_hash(value: str) -> str:
    if value == UNSIGNED_PAYLOAD or value in STREAMING_PAYLOAD_MARKERS:
        return value
    if _SHA256_HEX_RE.fullmatch(value):
        return value
    raise SigV4Error(
        "InvalidArgument",
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING-* marker or a sha256 hex",
    )


def _split_authorization(value: str) -> dict[str, str]:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SigV4Error("AccessDenied", f"unsupported authorization type; use {ALGORITHM}")
    fields: dict[str, str] = {}
    for raw in rest.split(","):
        name, sep, field_value = raw.strip().partition("=")
        if not sep or name in fields:
            raise SigV4Error("AccessDenied", "the Authorization header is malformed")
        fields[name] = field_value.strip()
    if set(fields) != {"Credential", "SignedHeaders", "Signature"}:
        raise SigV4Error(
            "AccessDenied",
            "the Authorization header needs exactly Credential, SignedHeaders and Signature",
        )
    return fields


def _header_claim(
    authorization: str, headers: dict[str, list[str]], *, service: str, region: str | None
) -> _Claim:
    fields = _split_authorization(authorization)
    if "x-amz-date" in headers:
        amz_date = headers["x-amz-date"][0].strip()
        signed_at = _parse_amz_date(amz_date, "AccessDenied")
    elif "date" in headers:
        try:
            parsed = parsedate_to_datetime(headers["date"][0])
        except (TypeError, ValueError) as exc:
            raise SigV4Error("AccessDenied", "the Date header is not a valid HTTP date") from exc
        # HTTP dates are GMT; "-0000" parses naive, which must not mean local time.
        signed_at = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        amz_date = signed_at.strftime("%Y%m%dT%H%M%SZ")
    else:
        raise SigV4Error(
            "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header"
        )
    scope = _parse_credential(
        fields["Credential"],
        code="AuthorizationHeaderMalformed",
        amz_date=amz_date,
        service=service,
        region=region,
    )
    signed_headers = _parse_signed_headers(fields["SignedHeaders"], "AccessDenied")
    sig = fields["Signature"]
    if not _SIGNATURE_RE.fullmatch(sig):
        raise SigV4Error("AccessDenied", "the signature must be 64 lowercase hex characters")
    # S3 requires x-amz-content-sha256 with header auth; without a body (GET and
    # HEAD here), the hash of nothing is what any other SigV4 service signs.
    content = headers.get("x-amz-content-sha256")
    payload = _payload_hash(content[0].strip()) if content else EMPTY_SHA256
    return _Claim(scope, amz_date, signed_at, signed_headers, sig, payload, presigned=False)


def _query_claim(params: dict[str, str], *, service: str, region: str | None) -> _Claim:
    code = "AuthorizationQueryParametersError"
    missing = [name for name in _PRESIGN_PARAMS if name not in params]
    if missing:
        raise SigV4Error(code, f"the presigned URL lacks {', '.join(missing)}")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise SigV4Error(code, f"X-Amz-Algorithm must be {ALGORITHM}")
    amz_date = params["X-Amz-Date"]
    signed_at = _parse_amz_date(amz_date, code)
    scope = _parse_credential(
        params["X-Amz-Credential"], code=code, amz_date=amz_date, service=service, region=region
    )
    expires = params["X-Amz-Expires"]
    if not _EXPIRES_RE.fullmatch(expires) or not 1 <= int(expires) <= MAX_PRESIGNED_EXPIRES:
        raise SigV4Error(
            code, f"X-Amz-Expires must be a number of seconds from 1 to {MAX_PRESIGNED_EXPIRES}"
        )
    signed_headers = _parse_signed_headers(params["X-Amz-SignedHeaders"], code)
    sig = params["X-Amz-Signature"]
    if not _SIGNATURE_RE.fullmatch(sig):
        raise SigV4Error(code, "X-Amz-Signature must be 64 lowercase hex characters")
    # Presigned URLs sign UNSIGNED-PAYLOAD unless the signer put a hash in the query.
    payload = _payload_hash(params.get("X-Amz-Content-Sha256", UNSIGNED_PAYLOAD))
    return _Claim(scope, amz_date, signed_at, signed_headers, sig, payload, presigned=True)


def _check_time(claim: _Claim, params: dict[str, str], now: datetime, skew: timedelta) -> None:
    if claim.presigned:
        # A presigned URL is valid from its date (allowing skew) until date + expires.
        if claim.signed_at - skew > now:
            raise SigV4Error("AccessDenied", "Request is not valid yet")
        expiry = claim.signed_at + timedelta(seconds=int(params["X-Amz-Expires"]))
        if now > expiry:
            raise SigV4Error(
                "AccessDenied",
                "Request has expired",
                extra={
                    "Expires": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "ServerTime": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
            )
    elif abs(now - claim.signed_at) > skew:
        raise SigV4Error(
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
            extra={
                "RequestTime": claim.amz_date,
                "ServerTime": now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ"),
                "MaxAllowedSkewMilliseconds": str(int(skew.total_seconds() * 1000)),
            },
        )


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
            for both forms at once or a bad payload hash;
            ``AuthorizationHeaderMalformed`` or
            ``AuthorizationQueryParametersError`` for a bad credential scope
            or presigned parameters; ``InvalidAccessKeyId``;
            ``RequestTimeTooSkewed``; ``SignatureDoesNotMatch``.
    """
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now
    grouped = _header_map(headers)
    query = parse_query(raw_query)
    params = dict(query)
    authorization = grouped.get("authorization")
    presigned = "X-Amz-Signature" in params or "X-Amz-Credential" in params
    if authorization and presigned:
        raise SigV4Error("InvalidArgument", "Only one auth mechanism allowed")
    if authorization:
        if len(authorization) > 1:
            raise SigV4Error("AccessDenied", "more than one Authorization header")
        claim = _header_claim(authorization[0], grouped, service=service, region=region)
    elif presigned:
        counts = Counter(name for name, _ in query)
        repeated = [name for name in _PRESIGN_PARAMS if counts[name] > 1]
        if repeated:
            raise SigV4Error(
                "AuthorizationQueryParametersError", f"repeated parameters: {', '.join(repeated)}"
            )
        claim = _query_claim(params, service=service, region=region)
    else:
        raise SigV4Error("AccessDenied", "Access Denied: the request is not signed")
    missing = [name for name in claim.signed_headers if name not in grouped]
    if missing:
        raise SigV4Error("AccessDenied", f"signed headers are absent: {', '.join(missing)}")
    _check_time(claim, params, now, allowed_skew)
    secret = lookup(claim.scope.access_key_id)
    if secret is None:
        raise SigV4Error(
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            extra={"AWSAccessKeyId": claim.scope.access_key_id},
        )
    key = signing_key(secret, claim.scope.date, claim.scope.region, claim.scope.service)
    exclude = ("X-Amz-Signature",) if claim.presigned else ()
    if not _any_candidate_matches(
        claim,
        key,
        method=method,
        raw_path=raw_path,
        raw_query=raw_query,
        headers=grouped,
        exclude=exclude,
        double_encode_path=double_encode_path,
    ):
        raise SigV4Error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
            extra={"AWSAccessKeyId": claim.scope.access_key_id},
        )
    return VerifiedRequest(
        access_key_id=claim.scope.access_key_id,
        region=claim.scope.region,
        presigned=claim.presigned,
        payload_hash=claim.payload_hash,
        signed_headers=claim.signed_headers,
        signed_at=claim.signed_at,
    )


def _any_candidate_matches(
    claim: _Claim,
    key: bytes,
    *,
    method: str,
    raw_path: str | bytes,
    raw_query: str | bytes,
    headers: dict[str, list[str]],
    exclude: tuple[str, ...],
    double_encode_path: bool,
) -> bool:
    paths = {canonical_uri(raw_path, double_encode=double_encode_path)}
    if not double_encode_path:
        paths.add(_reencoded_uri(raw_path))
    queries = {
        canonical_query_string(raw_query, exclude=exclude),
        _as_sent_query_string(raw_query, exclude=exclude),
    }
    header_block = canonical_headers(
        [(name, value) for name, values in headers.items() for value in values],
        claim.signed_headers,
    )
    names = ";".join(sorted(set(claim.signed_headers)))
    matched = False
    for path in sorted(paths):
        for query in sorted(queries):
            canonical = f"{method.upper()}\n{path}\n{query}\n{header_block}\n{names}\n"
            canonical += claim.payload_hash
            expected = signature(key, string_to_sign(claim.amz_date, claim.scope.scope, canonical))
            # Constant time, and every candidate is tried, so timing shows nothing.
            matched |= hmac.compare_digest(expected, claim.signature)
    return matched


# --- signing (tests and tools) --------------------------------------------


def _amz_date(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def sign_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: HeaderInput,
    *,
    access_key_id: str,
    secret_access_key: str,
    now: datetime,
    region: str = "us-east-1",
    service: str = "s3",
    payload_hash: str | None = UNSIGNED_PAYLOAD,
    signed_headers: Iterable[str] | None = None,
    double_encode_path: bool = False,
) -> list[tuple[str, str]]:
    """Sign a request with the Authorization header; return its headers plus the new ones.

    Adds ``x-amz-date`` (unless present; then its value is used) and
    ``x-amz-content-sha256`` (unless ``payload_hash`` is None, which signs the
    empty-body hash without sending it, as non-S3 services do). Signs every
    header given unless ``signed_headers`` narrows it. ``raw_path`` and
    ``raw_query`` must already be encoded as they will be sent.
    """
    pairs = [(_text(n), _text(v)) for n, v in _header_pairs(headers)]
    present = {name for name, _ in pairs}
    if "x-amz-date" in present:
        amz_date = next(v for n, v in pairs if n == "x-amz-date").strip()
    else:
        amz_date = _amz_date(now)
        pairs.append(("x-amz-date", amz_date))
    if payload_hash is not None and "x-amz-content-sha256" not in present:
        pairs.append(("x-amz-content-sha256", payload_hash))
    names = sorted(set(signed_headers) if signed_headers is not None else {n for n, _ in pairs})
    scope = CredentialScope(access_key_id, amz_date[:8], region, service)
    canonical = canonical_request(
        method,
        raw_path,
        raw_query,
        pairs,
        signed_headers=names,
        payload_hash=payload_hash or EMPTY_SHA256,
        double_encode_path=double_encode_path,
    )
    key = signing_key(secret_access_key, scope.date, region, service)
    sig = signature(key, string_to_sign(amz_date, scope.scope, canonical))
    authorization = (
        f"{ALGORITHM} Credential={access_key_id}/{scope.scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={sig}"
    )
    return [*pairs, ("authorization", authorization)]


def presign_query(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: HeaderInput,
    *,
    access_key_id: str,
    secret_access_key: str,
    now: datetime,
    expires: int,
    region: str = "us-east-1",
    service: str = "s3",
    signed_headers: Iterable[str] = ("host",),
) -> str:
    """A presigned query string: ``raw_query`` plus the ``X-Amz-*`` parameters and signature.

    The payload is ``UNSIGNED-PAYLOAD``, as S3 presigned URLs sign it.
    """
    amz_date = _amz_date(now)
    scope = CredentialScope(access_key_id, amz_date[:8], region, service)
    names = sorted(set(signed_headers))
    added = {
        "X-Amz-Algorithm": ALGORITHM,
        "X-Amz-Credential": f"{access_key_id}/{scope.scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(expires),
        "X-Amz-SignedHeaders": ";".join(names),
    }
    extra = "&".join(f"{_uri_encode(n)}={_uri_encode(v)}" for n, v in added.items())
    query = f"{raw_query}&{extra}" if raw_query else extra
    canonical = canonical_request(
        method, raw_path, query, headers, signed_headers=names, payload_hash=UNSIGNED_PAYLOAD
    )
    key = signing_key(secret_access_key, scope.date, region, service)
    sig = signature(key, string_to_sign(amz_date, scope.scope, canonical))
    return f"{query}&X-Amz-Signature={sig}"
