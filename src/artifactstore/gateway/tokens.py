"""Continuation tokens: small, url-safe, tamper-proof carriers of listing state.

Owns: encoding a flat ``dict[str, str]`` (for example the last key listed and
the prefix it was listed under) into an opaque string a client sends back,
and refusing any string this server did not issue under the same key. It
does not encrypt: the state is readable by whoever holds the token, so it
must never contain secrets. It does not expire tokens; the state can carry
a timestamp if a caller needs that.

Format (version 1): ``base64url(0x01 || payload || HMAC-SHA256(key, label
|| 0x01 || payload))`` without padding, where ``payload`` is the state as
canonical JSON (sorted keys, no spaces, UTF-8) and ``label`` separates this
use of the key from any other. Spec: RFC 2104 (HMAC), RFC 4648 section 5
(base64url), RFC 8785's idea of one canonical JSON text per value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re

from artifactstore.errors import InvalidInputError

__all__ = ["MAX_TOKEN_LENGTH", "decode_token", "encode_token"]

MAX_TOKEN_LENGTH = 4096
_VERSION = b"\x01"
_LABEL = b"artifactstore.continuation-token\x00"
_MAC_SIZE = hashlib.sha256().digest_size
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+")


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, _LABEL + body, hashlib.sha256).digest()


def _check_key(key: bytes) -> None:
    if not key:
        raise ValueError("the token key must not be empty")


def encode_token(key: bytes, state: dict[str, str]) -> str:
    """An opaque token for ``state``; equal states give equal tokens under one key.

    Raises:
        ValueError: the key is empty or the state is not text to text.
    """
    _check_key(key)
    items: list[tuple[object, object]] = list(state.items())
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in items):
        raise ValueError("token state must map text to text")
    payload = json.dumps(state, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    body = _VERSION + payload.encode("utf-8")
    return base64.urlsafe_b64encode(body + _mac(key, body)).rstrip(b"=").decode("ascii")


def decode_token(key: bytes, token: str) -> dict[str, str]:
    """The state a token carries, if this key issued it unchanged.

    Raises:
        InvalidInputError: the token is malformed, too long, of another
            version, altered, or issued under another key. The message says
            only that the token is invalid.
        ValueError: the key is empty.
    """
    _check_key(key)
    invalid = InvalidInputError("the continuation token is not valid")
    if len(token) > MAX_TOKEN_LENGTH or not _TOKEN_RE.fullmatch(token):
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise invalid from exc
    # Reject the aliases base64 allows in the last character's unused bits.
    canonical = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    if canonical != token or len(raw) <= len(_VERSION) + _MAC_SIZE or raw[:1] != _VERSION:
        raise invalid
    body, mac = raw[:-_MAC_SIZE], raw[-_MAC_SIZE:]
    if not hmac.compare_digest(mac, _mac(key, body)):
        raise invalid
    try:
        state = json.loads(body[1:].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:  # only if the key signed garbage
        raise invalid from exc
    if not isinstance(state, dict):
        raise invalid
    result: dict[str, str] = {}
    for name, value in state.items():
        if not isinstance(value, str):
            raise invalid
        result[name] = value
    return result
