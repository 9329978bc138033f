"""Token view: the API tokens that authenticate, by name, scope and hash."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from artifactstore.db.tables import api_tokens
from artifactstore.events.payloads import TokenCreated, TokenRevoked

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from artifactstore.events.log import Event

__all__ = ["apply_token_event"]


async def apply_token_event(
    conn: AsyncConnection, event: Event, data: TokenCreated | TokenRevoked
) -> None:
    """Fold one token event into the view."""
    if isinstance(data, TokenCreated):
        await conn.execute(
            api_tokens.insert().values(
                name=data.name,
                token_hash=data.token_hash,
                scope=data.scope,
                created_at=event.occurred_at,
            )
        )
        return
    await conn.execute(
        sa.update(api_tokens)
        .where(api_tokens.c.name == data.name)
        .values(revoked=True, revoked_at=event.occurred_at)
    )
