"""Server-wide secrets: named values every replica on one database shares (DESIGN section 13).

Owns every read and write of ``server_secrets`` (migration 0005): a value is
created once, by whichever process asks first, and never rewritten, so every
``artifactstore serve`` on the database gets the same bytes, however many
start at once. It does not decide what a value means or derive keys from it
(the S3 gateway's continuation-token key is ``gateway/listing.py``), and it
records no event: events are public history, these are secrets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from artifactstore.db.engine import autocommit
from artifactstore.db.tables import server_secrets
from artifactstore.errors import ConflictError

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["shared_secret"]

_ATTEMPTS = 3


async def shared_secret(engine: AsyncEngine, name: str, make: Callable[[], bytes]) -> bytes:
    """The value stored under ``name``; if there is none, ``make()``'s, stored first.

    One ``SELECT`` once the value exists (``make`` is not called). Otherwise
    race-free without a lock: ``INSERT ... ON CONFLICT (name) DO NOTHING``
    waits for a concurrent insert of the same name to commit (and then does
    nothing), and the ``SELECT`` after it, a new statement in autocommit
    mode, sees whichever insert won. Every caller therefore gets the one
    stored value, which is its own ``make()`` only for the first. Deleting
    the row (to rotate it) makes the next caller's ``make()`` the value.

    Raises:
        ConflictError: the row was deleted between the two statements, three times.
    """
    select = sa.select(server_secrets.c.value).where(server_secrets.c.name == name)
    async with autocommit(engine) as conn:
        value = await conn.scalar(select)
        for _ in range(_ATTEMPTS):
            if value is not None:
                break
            await conn.execute(
                insert(server_secrets)
                .values(name=name, value=make())
                .on_conflict_do_nothing(index_elements=[server_secrets.c.name])
            )
            value = await conn.scalar(select)
    if value is None:  # an operator deleted the row between our statements, three times
        raise ConflictError(f"server secret {name!r} was deleted while it was being read")
    return bytes(value)
