"""Who is asking: SigV4 credentials and the anonymous-read policy of the gateway.

Owns: the table of access keys built once at start-up from
``[[gateway.credentials]]`` (secrets resolved through ``SecretRef.reveal``,
so a missing secret fails the start, not the first request), the decision
whether unsigned requests may read (``gateway.anonymous_read`` and a
loopback listener, both required: DESIGN section 8), and the call into
``sigv4.verify_request``. It does not decide what a principal may do: every
authenticated principal may read everything, and nobody may write.

Spec: DESIGN section 8 ("Authentication"); the signature rules are in
``gateway/sigv4.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from artifactstore.config import is_loopback
from artifactstore.gateway.sigv4 import SigV4Error, has_signature, parse_query, verify_request

if TYPE_CHECKING:
    from collections.abc import Mapping

    from artifactstore.config import GatewaySettings
    from artifactstore.gateway.sigv4 import HeaderInput

__all__ = ["ANONYMOUS", "Authenticator"]

#: The principal name of an unsigned request where anonymous reads are allowed.
ANONYMOUS = "anonymous"
_SIGV2_PARAMS = frozenset({"AWSAccessKeyId", "Signature"})


def _sigv2_query(raw_query: bytes) -> bool:
    return any(name in _SIGV2_PARAMS for name, _ in parse_query(raw_query))


@dataclass(frozen=True, slots=True)
class Authenticator:
    """Checks each request's signature against the configured access keys."""

    secrets: Mapping[str, str]
    anonymous_read: bool

    @classmethod
    def from_settings(cls, gateway: GatewaySettings, *, host: str) -> Authenticator:
        """Resolve every configured secret now; anonymous reads only on a loopback bind.

        Raises:
            ConfigError: a secret reference cannot be resolved.
        """
        secrets = {
            cred.access_key_id: cred.secret_access_key.reveal() for cred in gateway.credentials
        }
        return cls(secrets=secrets, anonymous_read=gateway.anonymous_read and is_loopback(host))

    def authenticate(
        self, method: str, raw_path: bytes, raw_query: bytes, headers: HeaderInput
    ) -> str:
        """The principal of a request: an access key id, or ``ANONYMOUS``.

        A request carrying any signature material is verified and never
        falls back to anonymous.

        Raises:
            SigV4Error: a bad or missing signature (``AccessDenied`` for an
                unsigned request where anonymous reads are off).
        """
        if not has_signature(raw_query, headers):
            if _sigv2_query(raw_query):
                # A SigV2 presigned URL must not pass as anonymous.
                raise SigV4Error(
                    "AccessDenied",
                    "Signature Version 2 is not supported; use AWS4-HMAC-SHA256 (SigV4)",
                )
            if self.anonymous_read:
                return ANONYMOUS
            raise SigV4Error("AccessDenied", "Access Denied: sign the request (AWS SigV4)")
        verified = verify_request(
            method, raw_path, raw_query, headers, self.secrets.get, now=datetime.now(UTC)
        )
        return verified.access_key_id
