"""Object listings: one page of keys and common prefixes, and the continuation-token key.

Owns: walking a package's files in key order (``Registry.files``, a keyset
scan of the ``(package, key)`` index in "C" collation, i.e. UTF-8 byte
order, as S3 lists), rolling keys up into ``CommonPrefixes`` under a
delimiter, deciding ``IsTruncated`` and where the next page starts, and the
HMAC key that continuation tokens are signed with (derived from a secret
every replica shares in the database, ``registry/server_secrets.py``). It does not parse
query parameters or render XML (``gateway/app.py`` and ``gateway/xml.py``).

Rolled-up prefixes are skipped, not scanned: after emitting the common
prefix ``P`` the walk jumps to the first key after ``P + U+10FFFF`` (the
largest code point, so every key that begins with ``P`` sorts below it but
the rare one continuing with U+10FFFF itself, which rolls up into ``P`` again
and is dropped as a repeat). A listing of ``s3://pkg/`` over a million keys
under a hundred versions therefore reads about a hundred short index ranges,
not a million rows. Batches shrink after a batch that was mostly rolled up,
so a jump reads little it will throw away.

Spec: ListObjectsV2 and ListObjects in the Amazon S3 API reference; token
format in ``gateway/tokens.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from artifactstore.registry.server_secrets import shared_secret

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy.ext.asyncio import AsyncEngine

    from artifactstore.registry import Registry
    from artifactstore.registry.records import FileRecord

__all__ = [
    "MAX_CODE_POINT",
    "MAX_KEYS",
    "TOKEN_KEY_FILE",
    "TOKEN_SECRET_NAME",
    "ListingPage",
    "list_page",
    "load_token_key",
    "start_position",
]

MAX_KEYS = 1000
MAX_CODE_POINT = "\U0010ffff"
TOKEN_KEY_FILE = "gateway-token-key"  # noqa: S105 - a file name; legacy, only ever adopted
TOKEN_SECRET_NAME = "gateway.continuation-token"  # noqa: S105 - a row name in server_secrets
_TOKEN_KEY_LABEL = b"artifactstore.gateway.continuation-token.v1"
_SECRET_BYTES = 32
_MIN_BATCH = 16

log = logging.getLogger("artifactstore.gateway")


@dataclass(frozen=True, slots=True)
class ListingPage:
    """One page: files and common prefixes in key order, and where the next page starts.

    ``next_after`` is the exclusive keyset position to resume from (set when
    ``truncated``); ``last`` is the last key or prefix returned (v1's NextMarker).
    """

    contents: tuple[FileRecord, ...]
    common_prefixes: tuple[str, ...]
    truncated: bool
    next_after: str | None
    last: str | None


async def load_token_key(engine: AsyncEngine, data_dir: Path) -> bytes:
    """The continuation-token key: HMAC of the secret every replica shares in the database.

    The secret is the ``server_secrets`` row ``TOKEN_SECRET_NAME``, made once
    by whichever server starts first (``registry.server_secrets``), so every
    replica on the database and every later start derives the same key and
    tokens work on any replica and survive restarts. When a start finds no
    row, the secret of a legacy ``<data_dir>/gateway-token-key`` (its home
    before migration 0005) is stored instead of fresh random bytes, so
    tokens issued before the upgrade keep working; once the row exists the
    file is never read again, and it is never created. Deleting the row
    (and restarting every replica) invalidates every outstanding token:
    clients see ``InvalidArgument`` and restart the listing.
    """
    legacy_path = data_dir / TOKEN_KEY_FILE
    legacy: list[bytes] = []

    def make() -> bytes:
        legacy[:] = [found] if (found := _legacy_secret(legacy_path)) else []
        return legacy[0] if legacy else os.urandom(_SECRET_BYTES)

    secret = await shared_secret(engine, TOKEN_SECRET_NAME, make)
    if legacy and legacy[0] == secret:
        log.info("adopted the continuation-token secret of %s; it is no longer used", legacy_path)
    return hmac.new(secret, _TOKEN_KEY_LABEL, hashlib.sha256).digest()


def _legacy_secret(path: Path) -> bytes | None:
    """The secret of a data dir's legacy key file, or None if there is no usable one."""
    try:
        secret = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(secret) < _SECRET_BYTES:
        log.warning("ignoring %s: %d bytes, not %d", path, len(secret), _SECRET_BYTES)
        return None
    return secret


def _rollup(key: str, prefix: str, delimiter: str | None) -> str | None:
    if not delimiter:
        return None
    at = key.find(delimiter, len(prefix))
    return None if at < 0 else key[: at + len(delimiter)]


def start_position(after: str, prefix: str, delimiter: str | None) -> str:
    """The keyset position to resume after ``after`` (a key, a marker or a common prefix).

    A marker that is itself a common prefix (v1's NextMarker) resumes past
    everything under it, so the prefix is not listed twice.
    """
    if after and _rollup(after, prefix, delimiter) == after:
        return after + MAX_CODE_POINT
    return after


async def list_page(
    registry: Registry,
    bucket: str,
    *,
    prefix: str,
    delimiter: str | None,
    after: str,
    max_keys: int,
    include_yanked: bool,
) -> ListingPage:
    """One listing page of at most ``max_keys`` entries (files plus common prefixes).

    ``after`` is an exclusive keyset position (from ``start_position``).
    ``truncated`` is exact: it is True only if another visible entry exists.
    """
    contents: list[FileRecord] = []
    prefixes: list[str] = []
    cursor = after
    last: str | None = None
    batch = min(max_keys + 1, MAX_KEYS)
    while True:
        rows = await registry.files(
            bucket,
            after_key=cursor,
            prefix=prefix,
            limit=max(batch, 1),
            include_yanked=include_yanked,
        )
        skipped = 0
        for row in rows:
            key = row.key
            if key <= cursor:
                skipped += 1
                continue
            common = _rollup(key, prefix, delimiter)
            if common is not None and prefixes and prefixes[-1] == common:
                cursor = key  # a key past the jump that still rolls up into the same prefix
                skipped += 1
                continue
            if len(contents) + len(prefixes) >= max_keys:
                return ListingPage(
                    tuple(contents), tuple(prefixes), truncated=True, next_after=cursor, last=last
                )
            if common is None:
                contents.append(row)
                cursor = last = key
            else:
                prefixes.append(common)
                last = common
                cursor = common + MAX_CODE_POINT
        if len(rows) < batch:
            return ListingPage(
                tuple(contents), tuple(prefixes), truncated=False, next_after=None, last=last
            )
        remaining = max_keys - len(contents) - len(prefixes)
        if remaining <= 0:
            batch = 1  # only to learn whether anything follows
        elif skipped * 2 > len(rows):
            batch = max(_MIN_BATCH, min(remaining + 1, batch // 4))
        else:
            batch = min(remaining + 1, MAX_KEYS)
