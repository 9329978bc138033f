"""S3-compatible read gateway (DESIGN section 8).

The protocol kernel lives here as pure modules: ``sigv4`` (Signature Version 4
verification, with ``sigv4_*`` and the shared ``sigbase``), ``sigv2``
(Signature Version 2), ``xml`` (response documents), ``errors`` (S3 error codes and
the mapping from artifactstore's errors) and ``tokens`` (continuation
tokens). ``Range`` and conditional requests are shared with the REST API in
``artifactstore.http_ranges``. The ASGI app builds on these.
"""

from artifactstore.gateway.errors import S3Error, s3_error_for
from artifactstore.gateway.sigv4 import SigV4Error, VerifiedRequest, has_signature, verify_request
from artifactstore.gateway.tokens import decode_token, encode_token

__all__ = [
    "S3Error",
    "SigV4Error",
    "VerifiedRequest",
    "decode_token",
    "encode_token",
    "has_signature",
    "s3_error_for",
    "verify_request",
]
