"""API tokens: created, listed, revoked as events; stored only as sha256 hashes.

A token is shown once, at creation. Scopes are ordered: ``read`` < ``write``
< ``admin``; a token of a scope can do what the lower ones can.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa

from artifactstore.db.engine import autocommit
from artifactstore.db.tables import api_tokens
from artifactstore.errors import ConflictError, InvalidInputError, NotFoundError
from artifactstore.events import TokenCreated, TokenRevoked
from artifactstore.registry.journal import transaction

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["SCOPES", "TOKEN_PREFIX", "TokenInfo", "Tokens", "scope_allows"]

SCOPES = ("read", "write", "admin")
TOKEN_PREFIX = "ast_"  # noqa: S105 - a prefix, not a secret
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def scope_allows(have: str, need: str) -> bool:
    """Whether a token of scope ``have`` may do what needs ``need``."""
    return SCOPES.index(have) >= SCOPES.index(need)


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token's public facts (never the token itself)."""

    name: str
    scope: str
    created_at: datetime
    revoked: bool


class Tokens:
    """Token management and authentication over the ``api_tokens`` view."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(self, name: str, scope: str, *, actor: str) -> str:
        """Create a token and return it; this is the only time it is visible.

        Raises:
            InvalidInputError: bad name or scope.
            ConflictError: the name is taken (revoked names stay taken).
        """
        if not _NAME_RE.fullmatch(name):
            raise InvalidInputError(f"token name must match {_NAME_RE.pattern}", name=name[:80])
        if scope not in SCOPES:
            raise InvalidInputError(f"scope must be one of {', '.join(SCOPES)}", scope=scope)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        async with transaction(self.engine, actor=actor) as tx:
            taken = await tx.conn.scalar(
                sa.select(api_tokens.c.name).where(api_tokens.c.name == name)
            )
            if taken is not None:
                raise ConflictError(f"a token named {name!r} exists", name=name)
            await tx.record(TokenCreated(name=name, scope=scope, token_hash=_hash(token)))
        return token

    async def revoke(self, name: str, *, actor: str) -> None:
        """Revoke a token by name; revoking a revoked token is a no-op.

        Raises:
            NotFoundError: no token has this name.
        """
        async with transaction(self.engine, actor=actor) as tx:
            row = (
                await tx.conn.execute(sa.select(api_tokens).where(api_tokens.c.name == name))
            ).first()
            if row is None:
                raise NotFoundError(f"no token named {name!r}", name=name)
            if not row.revoked:
                await tx.record(TokenRevoked(name=name))

    async def list(self) -> list[TokenInfo]:
        """Every token by name, revoked ones included."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(api_tokens).order_by(api_tokens.c.name))).all()
        return [TokenInfo(r.name, r.scope, r.created_at, r.revoked) for r in rows]

    async def authenticate(self, token: str) -> TokenInfo | None:
        """The live token matching ``token``, or None.

        Lookup is by the token's sha256, so no stored value is compared
        byte by byte with attacker input.
        """
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:  # noqa: PLR2004 - sanity bound
            return None
        async with autocommit(self.engine) as conn:
            row = (
                await conn.execute(
                    sa.select(api_tokens).where(
                        api_tokens.c.token_hash == _hash(token), api_tokens.c.revoked.is_(False)
                    )
                )
            ).first()
        return None if row is None else TokenInfo(row.name, row.scope, row.created_at, row.revoked)
