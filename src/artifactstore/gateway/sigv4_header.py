"""SigV4 in the ``Authorization`` header: reading the claim, and a signer for tests and tools.

Owns: splitting ``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
Signature=...``, the request date (``X-Amz-Date``, else ``Date``), the
payload hash (``x-amz-content-sha256``), and ``sign_request``. It does not
check the signature or the clock (``sigv4.py``).

Spec: "Authenticating Requests: Using the Authorization Header (AWS
Signature Version 4)" in the Amazon S3 API reference.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from artifactstore.gateway.sigbase import (
    SignatureError,
    header_pairs,
    parse_amz_date,
    parse_http_date,
    text,
)
from artifactstore.gateway.sigv4_canonical import (
    ALGORITHM,
    EMPTY_SHA256,
    SIGNATURE_RE,
    UNSIGNED_PAYLOAD,
    Claim,
    CredentialScope,
    canonical_request,
    parse_credential,
    parse_payload_hash,
    parse_signed_headers,
    signature,
    signing_key,
    string_to_sign,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from artifactstore.gateway.sigbase import HeaderInput

__all__ = ["format_amz_date", "header_claim", "sign_request"]


def _split_authorization(value: str) -> dict[str, str]:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureError("AccessDenied", f"unsupported authorization type; use {ALGORITHM}")
    fields: dict[str, str] = {}
    for raw in rest.split(","):
        name, sep, field_value = raw.strip().partition("=")
        if not sep or name in fields:
            raise SignatureError("AccessDenied", "the Authorization header is malformed")
        fields[name] = field_value.strip()
    if set(fields) != {"Credential", "SignedHeaders", "Signature"}:
        raise SignatureError(
            "AccessDenied",
            "the Authorization header needs exactly Credential, SignedHeaders and Signature",
        )
    return fields


def header_claim(
    authorization: str, headers: dict[str, list[str]], *, service: str, region: str | None
) -> Claim:
    """What an ``Authorization: AWS4-HMAC-SHA256 ...`` request claims (not yet checked)."""
    fields = _split_authorization(authorization)
    if "x-amz-date" in headers:
        amz_date = headers["x-amz-date"][0].strip()
        signed_at = parse_amz_date(amz_date, "AccessDenied")
    elif "date" in headers:
        signed_at = parse_http_date(headers["date"][0])
        amz_date = signed_at.strftime("%Y%m%dT%H%M%SZ")
    else:
        raise SignatureError(
            "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header"
        )
    scope = parse_credential(
        fields["Credential"],
        code="AuthorizationHeaderMalformed",
        amz_date=amz_date,
        service=service,
        region=region,
    )
    signed_headers = parse_signed_headers(fields["SignedHeaders"], "AccessDenied")
    sig = fields["Signature"]
    if not SIGNATURE_RE.fullmatch(sig):
        raise SignatureError("AccessDenied", "the signature must be 64 lowercase hex characters")
    # S3 requires x-amz-content-sha256 with header auth; without a body (GET and
    # HEAD here), the hash of nothing is what any other SigV4 service signs.
    content = headers.get("x-amz-content-sha256")
    payload = parse_payload_hash(content[0].strip()) if content else EMPTY_SHA256
    return Claim(scope, amz_date, signed_at, signed_headers, sig, payload, presigned=False)


# --- signing (tests and tools) --------------------------------------------


def format_amz_date(now: datetime) -> str:
    """``now`` in the ``X-Amz-Date`` format."""
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
    pairs = [(text(n), text(v)) for n, v in header_pairs(headers)]
    present = {name for name, _ in pairs}
    if "x-amz-date" in present:
        amz_date = next(v for n, v in pairs if n == "x-amz-date").strip()
    else:
        amz_date = format_amz_date(now)
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
