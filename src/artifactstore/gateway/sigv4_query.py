"""SigV4 presigned URLs: reading the ``X-Amz-*`` query parameters, and a presigner.

Owns: the required presign parameters and their syntax (algorithm,
credential scope, date, ``X-Amz-Expires`` up to 7 days, signed headers,
signature), the payload hash a URL signs (``UNSIGNED-PAYLOAD`` unless the
signer put one in the query), and ``presign_query`` for tests and tools. It
does not check the signature or the clock (``sigv4.py``).

Spec: "Authenticating Requests: Using Query Parameters (AWS Signature
Version 4)" in the Amazon S3 API reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from artifactstore.gateway.sigbase import SignatureError, parse_amz_date, uri_encode
from artifactstore.gateway.sigv4_canonical import (
    ALGORITHM,
    EXPIRES_RE,
    MAX_PRESIGNED_EXPIRES,
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
from artifactstore.gateway.sigv4_header import format_amz_date

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from artifactstore.gateway.sigbase import HeaderInput

__all__ = ["PRESIGN_PARAMS", "presign_query", "query_claim"]

PRESIGN_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)


def query_claim(params: dict[str, str], *, service: str, region: str | None) -> Claim:
    """What a presigned URL claims (not yet checked)."""
    code = "AuthorizationQueryParametersError"
    missing = [name for name in PRESIGN_PARAMS if name not in params]
    if missing:
        raise SignatureError(code, f"the presigned URL lacks {', '.join(missing)}")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise SignatureError(code, f"X-Amz-Algorithm must be {ALGORITHM}")
    amz_date = params["X-Amz-Date"]
    signed_at = parse_amz_date(amz_date, code)
    scope = parse_credential(
        params["X-Amz-Credential"], code=code, amz_date=amz_date, service=service, region=region
    )
    expires = params["X-Amz-Expires"]
    if not EXPIRES_RE.fullmatch(expires) or not 1 <= int(expires) <= MAX_PRESIGNED_EXPIRES:
        raise SignatureError(
            code, f"X-Amz-Expires must be a number of seconds from 1 to {MAX_PRESIGNED_EXPIRES}"
        )
    signed_headers = parse_signed_headers(params["X-Amz-SignedHeaders"], code)
    sig = params["X-Amz-Signature"]
    if not SIGNATURE_RE.fullmatch(sig):
        raise SignatureError(code, "X-Amz-Signature must be 64 lowercase hex characters")
    # Presigned URLs sign UNSIGNED-PAYLOAD unless the signer put a hash in the query.
    payload = parse_payload_hash(params.get("X-Amz-Content-Sha256", UNSIGNED_PAYLOAD))
    return Claim(scope, amz_date, signed_at, signed_headers, sig, payload, presigned=True)


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
    amz_date = format_amz_date(now)
    scope = CredentialScope(access_key_id, amz_date[:8], region, service)
    names = sorted(set(signed_headers))
    added = {
        "X-Amz-Algorithm": ALGORITHM,
        "X-Amz-Credential": f"{access_key_id}/{scope.scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(expires),
        "X-Amz-SignedHeaders": ";".join(names),
    }
    extra = "&".join(f"{uri_encode(n)}={uri_encode(v)}" for n, v in added.items())
    query = f"{raw_query}&{extra}" if raw_query else extra
    canonical = canonical_request(
        method, raw_path, query, headers, signed_headers=names, payload_hash=UNSIGNED_PAYLOAD
    )
    key = signing_key(secret_access_key, scope.date, region, service)
    sig = signature(key, string_to_sign(amz_date, scope.scope, canonical))
    return f"{query}&X-Amz-Signature={sig}"
