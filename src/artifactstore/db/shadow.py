"""Shadow copies of tables: create, compare and swap in, for an online rebuild.

A shadow of table ``t`` is ``t_replay``, made with ``CREATE TABLE ...
(LIKE t INCLUDING ALL)``: the same columns in the same order, defaults,
check constraints (same names), primary key and indexes (PostgreSQL's
generated names). ``swap`` renames ``t`` (and its indexes) aside to
``t_retired``, renames ``t_replay`` to ``t`` and each index back to the name
it had on ``t`` (matched by definition), so the schema afterwards is the
migrated one, Alembic's autogenerate sees no difference, and SQLAlchemy
``Table`` objects, which address tables by name, reach the new rows. The
caller drops the retired tables after its commit (``drop_retired``):
dropping a table of millions of rows unlinks gigabytes at COMMIT, 1.9 s at
10M events here, and the swap's transaction holds the log lock.

This module only issues DDL and comparisons in the caller's transaction; it
takes no lock of its own beyond what each statement needs (``swap`` takes
ACCESS EXCLUSIVE on both tables until the transaction ends), and it knows
nothing of events or views. Grants on a table are not copied by ``LIKE``:
a deployment that grants on the view tables re-grants after a swap
(docs/OPERATOR.md).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = [
    "SHADOW_SUFFIX",
    "analyze",
    "create_shadows",
    "differing",
    "drop_retired",
    "drop_shadows",
    "shadow_of",
    "swap",
]

SHADOW_SUFFIX = "_replay"
RETIRED_SUFFIX = "_retired"
_INDEX_DEF = re.compile(r"^CREATE (UNIQUE )?INDEX \S+ ON \S+ (.*)$")


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def shadow_of(table: sa.Table) -> str:
    """The shadow table's name."""
    return table.name + SHADOW_SUFFIX


async def drop_shadows(conn: AsyncConnection, tables: Sequence[sa.Table]) -> None:
    """Drop the shadows of ``tables`` if they exist (left over by an interrupted run)."""
    for table in tables:
        await conn.execute(sa.text(f"DROP TABLE IF EXISTS {_quoted(shadow_of(table))}"))
    await drop_retired(conn, tables)


async def drop_retired(conn: AsyncConnection, tables: Sequence[sa.Table]) -> None:
    """Drop the tables a ``swap`` retired, if they exist (after its commit, or left over)."""
    for table in tables:
        await conn.execute(sa.text(f"DROP TABLE IF EXISTS {_quoted(table.name + RETIRED_SUFFIX)}"))


async def create_shadows(conn: AsyncConnection, tables: Sequence[sa.Table]) -> dict[str, str]:
    """Create an empty shadow of each table (dropping leftovers); return live -> shadow names."""
    await drop_shadows(conn, tables)
    for table in tables:
        live, shadow = _quoted(table.name), _quoted(shadow_of(table))
        await conn.execute(sa.text(f"CREATE TABLE {shadow} (LIKE {live} INCLUDING ALL)"))
    return {table.name: shadow_of(table) for table in tables}


async def analyze(conn: AsyncConnection, tables: Sequence[sa.Table]) -> None:
    """Collect planner statistics on the shadows, so queries plan well right after the swap."""
    for table in tables:
        await conn.execute(sa.text(f"ANALYZE {_quoted(shadow_of(table))}"))


async def _indexes(conn: AsyncConnection, name: str) -> dict[tuple[bool, str], str]:
    """The table's indexes: (unique, definition without names) -> index name."""
    rows = await conn.execute(
        sa.text(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = CAST(:t AS regclass)"
        ),
        {"t": _quoted(name)},
    )
    found: dict[tuple[bool, str], str] = {}
    for index_name, definition in rows:
        match = _INDEX_DEF.match(definition)
        if match is None:
            raise RuntimeError(f"unexpected index definition {definition!r}")
        found[(match.group(1) is not None, match.group(2))] = index_name
    return found


async def swap(conn: AsyncConnection, tables: Sequence[sa.Table]) -> None:
    """Replace each table by its shadow, index names included, in the caller's transaction.

    Nothing is visible to other sessions before the caller commits; a
    rollback leaves the live tables as they were. Every live table is locked
    first in one statement, so the caller's ``lock_timeout`` bounds the
    whole wait for readers, not each table's.
    """
    every = ", ".join(_quoted(table.name) for table in tables)
    await conn.execute(sa.text(f"LOCK TABLE {every} IN ACCESS EXCLUSIVE MODE"))
    for table in tables:
        live, shadow = table.name, shadow_of(table)
        names = await _indexes(conn, live)
        shadow_names = await _indexes(conn, shadow)
        if names.keys() != shadow_names.keys():
            raise RuntimeError(f"{shadow} does not have the indexes of {live}")
        retired = live + RETIRED_SUFFIX
        await conn.execute(sa.text(f"ALTER TABLE {_quoted(live)} RENAME TO {_quoted(retired)}"))
        for index_name in names.values():
            aside = _quoted(index_name[: 63 - len(RETIRED_SUFFIX)] + RETIRED_SUFFIX)
            await conn.execute(sa.text(f"ALTER INDEX {_quoted(index_name)} RENAME TO {aside}"))
        await conn.execute(sa.text(f"ALTER TABLE {_quoted(shadow)} RENAME TO {_quoted(live)}"))
        for key, index_name in shadow_names.items():
            # Renaming a constraint's index renames the constraint too.
            await conn.execute(
                sa.text(f"ALTER INDEX {_quoted(index_name)} RENAME TO {_quoted(names[key])}")
            )


async def differing(conn: AsyncConnection, tables: Sequence[sa.Table]) -> list[str]:
    """The tables whose rows differ from their shadow's (as multisets), sorted by name."""
    differ = []
    for table in tables:
        live, shadow = _quoted(table.name), _quoted(shadow_of(table))
        query = (
            f"SELECT EXISTS ((TABLE {live} EXCEPT ALL TABLE {shadow})"
            f" UNION ALL (TABLE {shadow} EXCEPT ALL TABLE {live}))"
        )
        if await conn.scalar(sa.text(query)):
            differ.append(table.name)
    return sorted(differ)
