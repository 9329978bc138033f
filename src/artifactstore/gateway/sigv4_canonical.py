"""The SigV4 algorithm: canonical request, string to sign, signing key, claim syntax.

Owns: the four steps of Signature Version 4 (canonical request, string to
sign, derived key, signature), the S3 variants of the canonical path and
query that verification tries, and the syntax of what a request claims
(``X-Amz-Date``, the credential scope, ``SignedHeaders``, the payload hash)
as a ``Claim``. It does not read a request as a whole (``sigv4_header.py``,
``sigv4_query.py``) or decide whether it is accepted (``sigv4.py``).

Spec: "Authenticating Requests (AWS Signature Version 4)" in the Amazon S3
API reference and the generic SigV4 process in the IAM user guide. S3 signs
the path exactly as sent (neither normalised nor double-encoded) and the
payload hash as ``x-amz-content-sha256`` says it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

from artifactstore.gateway.sigbase import (
    ENCODING,
    ERRORS,
    SignatureError,
    header_map,
    parse_query,
    query_pairs,
    text,
    uri_encode,
)

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from artifactstore.gateway.sigbase import HeaderInput

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "EXPIRES_RE",
    "MAX_PRESIGNED_EXPIRES",
    "SIGNATURE_RE",
    "STREAMING_PAYLOAD_MARKERS",
    "TERMINATOR",
    "UNSIGNED_PAYLOAD",
    "Claim",
    "CredentialScope",
    "as_sent_query_string",
    "canonical_headers",
    "canonical_query_string",
    "canonical_request",
    "canonical_uri",
    "parse_credential",
    "parse_payload_hash",
    "parse_signed_headers",
    "signature",
    "signing_key",
    "string_to_sign",
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
MAX_PRESIGNED_EXPIRES = 7 * 24 * 3600  # 604800 s, the S3 maximum

EXPIRES_RE = re.compile(r"[0-9]{1,6}")
SIGNATURE_RE = re.compile(r"[0-9a-f]{64}")
_SHA256_HEX_RE = re.compile(r"[0-9a-fA-F]{64}")
_SIGNED_HEADERS_RE = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+(;[a-z0-9!#$%&'*+.^_`|~-]+)*")


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
class Claim:
    """What a request claims, before the signature is checked."""

    scope: CredentialScope
    amz_date: str
    signed_at: datetime
    signed_headers: tuple[str, ...]
    signature: str
    payload_hash: str
    presigned: bool


# --- canonicalisation ------------------------------------------------------


def canonical_uri(raw_path: str | bytes, *, double_encode: bool = False) -> str:
    """The CanonicalURI of a path as received (percent-encoded).

    S3 (the default) signs the path exactly as sent: not normalised, not
    encoded again. Other AWS services encode the path once more
    (``double_encode``); feeding an unencoded path with ``double_encode``
    reproduces the AWS test suite's canonical paths. An empty path is ``/``.
    """
    path = text(raw_path) or "/"
    return uri_encode(path, keep_slash=True) if double_encode else path


def canonical_query_string(raw_query: str | bytes, *, exclude: Iterable[str] = ()) -> str:
    """The CanonicalQueryString: decode, encode per AWS rules, sort by name then value.

    Empty values are kept as ``name=``. Names in ``exclude`` (exact, decoded)
    are left out, which is how ``X-Amz-Signature`` leaves a presigned query.
    """
    excluded = set(exclude)
    encoded = sorted(
        (uri_encode(name), uri_encode(value))
        for name, value in parse_query(raw_query)
        if name not in excluded
    )
    return "&".join(f"{name}={value}" for name, value in encoded)


def as_sent_query_string(raw_query: str | bytes, *, exclude: Iterable[str] = ()) -> str:
    """The query's pairs as sent, only sorted (what botocore signs for a URL query)."""
    excluded = set(exclude)
    pairs = sorted(
        (n, v) for n, v in query_pairs(raw_query) if unquote_plus(n, ENCODING) not in excluded
    )
    return "&".join(f"{n}={v}" for n, v in pairs)


def canonical_headers(headers: HeaderInput, signed_headers: Iterable[str]) -> str:
    """CanonicalHeaders: one ``name:value`` line per signed header, sorted by name.

    Values are trimmed and inner whitespace runs collapse to one space;
    repeated headers join with ``,`` in the order received.

    Raises:
        KeyError: a signed header is absent from the request.
    """
    grouped = header_map(headers)
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
    digest = hashlib.sha256(canonical.encode(ENCODING, ERRORS)).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def signing_key(secret_access_key: str, date: str, region: str, service: str) -> bytes:
    """The derived key (step 3): HMAC chain over date, region, service, terminator."""
    key = ("AWS4" + secret_access_key).encode(ENCODING)
    for part in (date, region, service, TERMINATOR):
        key = hmac.new(key, part.encode(ENCODING), hashlib.sha256).digest()
    return key


def signature(key: bytes, to_sign: str) -> str:
    """The hex signature (step 4) of a string to sign under a derived key."""
    return hmac.new(key, to_sign.encode(ENCODING, ERRORS), hashlib.sha256).hexdigest()


# --- claim syntax ----------------------------------------------------------


def parse_credential(
    value: str, *, code: str, amz_date: str, service: str, region: str | None
) -> CredentialScope:
    """The credential scope, checked against the request's date, service and region."""
    parts = value.split("/")
    if len(parts) != 5 or not all(parts):  # noqa: PLR2004 - key/date/region/service/terminator
        raise SignatureError(
            code, "the credential must have the form <key>/<date>/<region>/s3/aws4_request"
        )
    key, date, cred_region, cred_service, terminator = parts
    if date != amz_date[:8]:
        raise SignatureError(code, f"the credential date {date!r} does not match X-Amz-Date")
    if cred_service != service:
        raise SignatureError(
            code, f"the credential service must be {service!r}, not {cred_service!r}"
        )
    if terminator != TERMINATOR:
        raise SignatureError(code, f"the credential must end in {TERMINATOR!r}")
    if region is not None and cred_region != region:
        raise SignatureError(
            code,
            f"the region {cred_region!r} is wrong; expecting {region!r}",
            extra={"Region": region},
        )
    return CredentialScope(key, date, cred_region, cred_service)


def parse_signed_headers(value: str, code: str) -> tuple[str, ...]:
    """``SignedHeaders``: lower-case names joined by ``;``, ``host`` among them."""
    if not _SIGNED_HEADERS_RE.fullmatch(value):
        raise SignatureError(code, "SignedHeaders must be lowercase names separated by ';'")
    names = tuple(value.split(";"))
    if "host" not in names:
        raise SignatureError(code, "the host header must be signed")
    return names


def parse_payload_hash(value: str) -> str:
    """An ``x-amz-content-sha256`` value: a marker or a sha256 hex, else InvalidArgument."""
    if value == UNSIGNED_PAYLOAD or value in STREAMING_PAYLOAD_MARKERS:
        return value
    if _SHA256_HEX_RE.fullmatch(value):
        return value
    raise SignatureError(
        "InvalidArgument",
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING-* marker or a sha256 hex",
    )
