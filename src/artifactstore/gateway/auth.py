"""Who is asking: the credentials, the anonymous-read policy, and the call to the right verifier.

Owns: the table of access keys built once at start-up from
``[[gateway.credentials]]`` (secrets resolved through ``SecretRef.reveal``,
so a missing secret fails the start, not the first request), the decision
whether unsigned requests may read (``gateway.anonymous_read`` and a
loopback listener, both required: DESIGN section 8), and the call into
the verifier of the scheme ``sigbase.detect_scheme`` names:
``sigv4.verify_request`` or ``sigv2.verify_v2``, with the same keys. It
does not decide what a principal may do: every authenticated principal may
read everything, and nobody may write.

Spec: DESIGN section 8 ("Authentication"); the signature rules are in
``gateway/sigv4.py`` and ``gateway/sigv2.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from artifactstore.config import is_loopback
from artifactstore.gateway.sigbase import Scheme, SignatureError, detect_scheme
from artifactstore.gateway.sigv2 import verify_v2
from artifactstore.gateway.sigv4 import verify_request

if TYPE_CHECKING:
    from collections.abc import Mapping

    from artifactstore.config import GatewaySettings
    from artifactstore.gateway.sigbase import HeaderInput

__all__ = ["ANONYMOUS", "Authenticator"]

#: The principal name of an unsigned request where anonymous reads are allowed.
ANONYMOUS = "anonymous"


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
        self,
        method: str,
        raw_path: bytes,
        raw_query: bytes,
        headers: HeaderInput,
        *,
        bucket_in_host: str | None = None,
    ) -> str:
        """The principal of a request: an access key id, or ``ANONYMOUS``.

        A request carrying any signature material (SigV4 or SigV2) is
        verified and never falls back to anonymous. ``bucket_in_host`` is
        the bucket of a virtual-hosted request, part of what SigV2 signs.

        Raises:
            SignatureError: a bad or missing signature (``AccessDenied`` for
                an unsigned request where anonymous reads are off).
        """
        scheme = detect_scheme(raw_query, headers)
        if scheme is Scheme.NONE:
            if self.anonymous_read:
                return ANONYMOUS
            raise SignatureError("AccessDenied", "Access Denied: sign the request (AWS SigV4)")
        lookup, now = self.secrets.get, datetime.now(UTC)
        if scheme in {Scheme.V2_HEADER, Scheme.V2_QUERY}:
            verified = verify_v2(
                method, raw_path, raw_query, headers, lookup, now=now, bucket_in_host=bucket_in_host
            )
            return verified.access_key_id
        return verify_request(method, raw_path, raw_query, headers, lookup, now=now).access_key_id
