"""Continuation tokens: round trips, and refusal of altered, foreign or malformed tokens."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from artifactstore.errors import InvalidInputError
from artifactstore.gateway.tokens import MAX_TOKEN_LENGTH, decode_token, encode_token

KEY = b"k" * 32
STATE = {"after": "1.0/dist/app tar+gz", "prefix": "1.0/", "v": "2"}


def test_round_trip() -> None:
    """A token decodes to the state it was made from."""
    assert decode_token(KEY, encode_token(KEY, STATE)) == STATE


def test_token_is_url_safe_and_unpadded() -> None:
    """Tokens use only base64url characters, so they travel in a query unescaped."""
    assert re.fullmatch(r"[A-Za-z0-9_-]+", encode_token(KEY, STATE))


def test_token_is_deterministic() -> None:
    """Equal states give equal tokens whatever the insertion order."""
    reordered = dict(reversed(list(STATE.items())))
    assert encode_token(KEY, STATE) == encode_token(KEY, reordered)


def test_empty_state_round_trips() -> None:
    """An empty state is a valid token."""
    assert decode_token(KEY, encode_token(KEY, {})) == {}


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=5))
def test_any_text_state_round_trips(state: dict[str, str]) -> None:
    """Any text-to-text state, unicode included, survives a round trip."""
    assert decode_token(KEY, encode_token(KEY, state)) == state


def test_foreign_key_is_refused() -> None:
    """A token made under another key is InvalidInputError."""
    token = encode_token(b"other-key", STATE)
    with pytest.raises(InvalidInputError):
        decode_token(KEY, token)


@given(st.data())
def test_any_single_character_change_is_refused(data: st.DataObject) -> None:
    """Changing any one character of a token makes it invalid."""
    token = encode_token(KEY, STATE)
    index = data.draw(st.integers(0, len(token) - 1))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    replacement = data.draw(st.sampled_from(alphabet).filter(lambda c: c != token[index]))
    tampered = token[:index] + replacement + token[index + 1 :]
    with pytest.raises(InvalidInputError):
        decode_token(KEY, tampered)


def test_forged_payload_with_copied_mac_is_refused() -> None:
    """Swapping in a different payload while keeping the old MAC is refused."""
    raw = base64.urlsafe_b64decode(encode_token(KEY, STATE) + "==")
    forged_body = b'\x01{"after":"zzz","prefix":"1.0/","v":"2"}'
    forged = base64.urlsafe_b64encode(forged_body + raw[-32:]).rstrip(b"=").decode()
    with pytest.raises(InvalidInputError):
        decode_token(KEY, forged)


@pytest.mark.parametrize(
    "token",
    ["", "!!!", "a", "abc=", "a b", "x" * (MAX_TOKEN_LENGTH + 1), "AQ", "é"],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    """Empty, non-base64url, short or overlong tokens are InvalidInputError."""
    with pytest.raises(InvalidInputError):
        decode_token(KEY, token)


def test_truncated_token_is_refused() -> None:
    """A token missing its last characters is refused."""
    token = encode_token(KEY, STATE)
    for cut in (1, 4, 10, len(token) - 1):
        with pytest.raises(InvalidInputError):
            decode_token(KEY, token[:-cut])


def test_error_message_reveals_nothing() -> None:
    """The refusal says only that the token is invalid, with the stable code."""
    with pytest.raises(InvalidInputError) as info:
        decode_token(KEY, "AAAA")
    assert info.value.message == "the continuation token is not valid"
    assert info.value.code == "invalid_input"


def test_empty_key_is_a_programming_error() -> None:
    """An empty key is a ValueError at both ends, not a token problem."""
    with pytest.raises(ValueError, match="key"):
        encode_token(b"", STATE)
    with pytest.raises(ValueError, match="key"):
        decode_token(b"", "AAAA")


def test_non_text_state_is_refused_at_encoding() -> None:
    """Encoding a state with non-text values is a ValueError."""
    with pytest.raises(ValueError, match="text"):
        encode_token(KEY, {"n": 1})  # type: ignore[dict-item]
