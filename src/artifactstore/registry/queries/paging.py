"""Paging for the read side: opaque cursors, the page-size check, statement batch sizes.

Owns ``MAX_PAGE``, the cursor format (URL-safe base64 of a JSON list of
strings, unpadded) and ``check_limit``. Lists are keyset-paginated (``WHERE
key > :last ORDER BY key LIMIT n``) with these cursors, never OFFSET, so page
n costs what page 1 costs. Runs no SQL: the statements that page live with
their view, in ``queries.blobs`` and ``queries.packages``.
"""

from __future__ import annotations

import base64
import binascii
import json

from artifactstore.errors import InvalidInputError

__all__ = ["IN_BATCH", "MAX_PAGE", "check_limit", "decode_cursor", "encode_cursor"]

MAX_PAGE = 1000
IN_BATCH = 1000  # keys per IN list: well under asyncpg's 32,767 parameters


def encode_cursor(*parts: str) -> str:
    """An opaque cursor naming the last item of a page."""
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> tuple[str, ...]:
    """The parts of a cursor made by ``encode_cursor``.

    Raises:
        InvalidInputError: the cursor is malformed.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError("malformed cursor", cursor=cursor[:100]) from exc
    if not (
        isinstance(parts, list)
        and len(parts) == arity
        and all(isinstance(p, str) and "\x00" not in p for p in parts)
    ):
        raise InvalidInputError("malformed cursor", cursor=cursor[:100])
    return tuple(parts)


def check_limit(limit: int) -> int:
    """``limit`` itself when it is a page size callers may ask for.

    Raises:
        InvalidInputError: ``limit`` is not between 1 and ``MAX_PAGE``.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInputError(f"limit must be between 1 and {MAX_PAGE}", limit=limit)
    return limit
