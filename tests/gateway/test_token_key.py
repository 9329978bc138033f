"""The continuation-token key lives in the database: one per database, shared by every replica.

Real PostgreSQL (a fresh migrated database per test) and real data dirs; the
replicas are separate engines, as separate ``artifactstore serve`` processes
would have. The end-to-end proof with two server processes and boto3 is
``tests/e2e/test_replica_listings.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import os
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from artifactstore.db.tables import server_secrets
from artifactstore.gateway.listing import TOKEN_KEY_FILE, TOKEN_SECRET_NAME, load_token_key
from artifactstore.gateway.tokens import decode_token, encode_token
from artifactstore.registry.server_secrets import shared_secret

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from sqlalchemy.ext.asyncio import AsyncEngine

# What the key file's secret was always turned into (gateway/listing.py before
# migration 0005): pinned, since tokens issued before the upgrade depend on it.
LEGACY_LABEL = b"artifactstore.gateway.continuation-token.v1"
REPLICAS = 4
NAMES = 25


async def _stored(engine: AsyncEngine) -> list[tuple[str, bytes]]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(server_secrets.c.name, server_secrets.c.value))
        return [(name, bytes(value)) for name, value in rows]


@contextlib.asynccontextmanager
async def _engines(database_url: str, count: int) -> AsyncIterator[list[AsyncEngine]]:
    """``count`` engines on one database, as ``count`` replica processes would have."""
    engines = [create_async_engine(database_url) for _ in range(count)]
    try:
        yield engines
    finally:
        for made in engines:
            await made.dispose()


async def test_token_key_is_stable_and_made_once(engine: AsyncEngine, tmp_path: Path) -> None:
    """The first load stores one 32-byte secret; later loads give the same key; no file is made."""
    first = await load_token_key(engine, tmp_path)
    assert await load_token_key(engine, tmp_path) == first
    [(name, secret)] = await _stored(engine)
    assert name == TOKEN_SECRET_NAME
    assert len(secret) == 32
    assert first == hmac.new(secret, LEGACY_LABEL, hashlib.sha256).digest()
    assert not (tmp_path / TOKEN_KEY_FILE).exists()


async def test_replicas_with_different_data_dirs_share_the_key(
    database_url: str, tmp_path: Path
) -> None:
    """Replicas starting at once, each with its own data dir and engine, all get one key."""
    async with _engines(database_url, REPLICAS) as engines:
        keys = await asyncio.gather(
            *(load_token_key(e, tmp_path / f"replica{i}") for i, e in enumerate(engines))
        )
        assert len(set(keys)) == 1
        assert len(await _stored(engines[0])) == 1


async def test_concurrent_first_stores_agree(database_url: str) -> None:
    """Racing first stores of a name from separate connections all get the one value stored."""
    async with _engines(database_url, REPLICAS) as engines:
        candidates = [[os.urandom(32) for _ in range(NAMES)] for _ in engines]

        async def replica(engine: AsyncEngine, mine: list[bytes]) -> list[bytes]:
            return list(
                await asyncio.gather(
                    *(
                        shared_secret(engine, f"race.{n}", functools.partial(bytes, value))
                        for n, value in enumerate(mine)
                    )
                )
            )

        got = await asyncio.gather(
            *(replica(e, c) for e, c in zip(engines, candidates, strict=True))
        )
        stored = dict(await _stored(engines[0]))
    for n in range(NAMES):
        seen = {values[n] for values in got}
        assert seen == {stored[f"race.{n}"]}
        assert stored[f"race.{n}"] in {mine[n] for mine in candidates}


async def test_legacy_key_file_is_adopted_once(engine: AsyncEngine, tmp_path: Path) -> None:
    """A legacy key file seeds the shared key, so old tokens still verify; then it is unused."""
    legacy = os.urandom(32)
    upgraded = tmp_path / "upgraded"
    upgraded.mkdir()
    (upgraded / TOKEN_KEY_FILE).write_bytes(legacy)
    old_key = hmac.new(legacy, LEGACY_LABEL, hashlib.sha256).digest()
    old_token = encode_token(old_key, {"bucket": "demo", "after": "1.0.0/a"})

    key = await load_token_key(engine, upgraded)
    assert decode_token(key, old_token) == {"bucket": "demo", "after": "1.0.0/a"}
    assert await load_token_key(engine, tmp_path / "new-replica") == key
    assert (upgraded / TOKEN_KEY_FILE).read_bytes() == legacy  # left in place

    other = tmp_path / "other"
    other.mkdir()
    (other / TOKEN_KEY_FILE).write_bytes(os.urandom(32))
    assert await load_token_key(engine, other) == key  # the database's key wins
    assert [value for _, value in await _stored(engine)] == [legacy]


async def test_deleting_the_row_makes_a_new_key(engine: AsyncEngine, tmp_path: Path) -> None:
    """Rotation: with the row deleted the next load stores a fresh secret and a new key."""
    first = await load_token_key(engine, tmp_path)
    async with engine.begin() as conn:
        await conn.execute(sa.delete(server_secrets))
    assert await load_token_key(engine, tmp_path) != first
