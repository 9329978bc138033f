"""Multi-row statements for folding a batch of events: pending changes and their SQL.

A batch's changes to one table are collected per primary key in Python
(``Changes``), in event order, then written with one statement per kind of
change: ``UPDATE ... FROM unnest(...)`` for rows that existed before the
batch, then ``INSERT ... SELECT FROM unnest(...)`` (with ``ON CONFLICT``
where the view upserts) for rows the batch creates. Each column travels as
one array parameter, so a statement costs the same few round trips for one
row or fifty thousand.

Statements address a table by name through ``Targets`` (live name -> name
to write), so the same fold fills the live views or a replay's shadow
tables. This module knows no event types; ``views.fold`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

import sqlalchemy as sa

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["Changes", "Targets", "insert_rows", "update_rows"]

K = TypeVar("K")

Targets = dict[str, str]
"""Live table name -> the table a fold writes (absent: the live table itself)."""

_ARRAY_TYPES: tuple[tuple[type[sa.types.TypeEngine[Any]], str], ...] = (
    (sa.LargeBinary, "bytea"),
    (sa.BigInteger, "bigint"),
    (sa.Integer, "integer"),
    (sa.Boolean, "boolean"),
    (sa.DateTime, "timestamptz"),
    (sa.Text, "text"),
)


class Changes(Generic[K]):
    """One batch's pending changes to one table, keyed by primary key.

    ``rows`` are rows the batch creates (or upserts), final values after
    every later event of the batch; ``updates`` are column values to set on
    rows that existed before the batch (if they do not, nothing happens,
    as with the one-statement-per-event UPDATE). ``update`` lands in
    ``rows`` when the batch created the key, in ``updates`` otherwise.
    """

    def __init__(self) -> None:
        self.rows: dict[K, dict[str, Any]] = {}
        self.updates: dict[K, dict[str, Any]] = {}

    def update(self, key: K, values: Mapping[str, Any]) -> None:
        """Set ``values`` on the row ``key`` if it exists by now in event order."""
        row = self.rows.get(key)
        if row is not None:
            row.update(values)
        else:
            self.updates.setdefault(key, {}).update(values)


def _keyed(columns: Sequence[str], key: object) -> dict[str, Any]:
    parts = key if isinstance(key, tuple) else (key,)
    return dict(zip(columns, parts, strict=True))


def _table_name(table: sa.Table, targets: Mapping[str, str]) -> str:
    return '"' + targets.get(table.name, table.name) + '"'


def _array_type(column: sa.Column[Any]) -> str:
    for kind, name in _ARRAY_TYPES:
        if isinstance(column.type, kind):
            return name
    raise TypeError(f"no array type for column {column.name} ({column.type})")


def _unnest(
    table: sa.Table, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]
) -> tuple[str, dict[str, list[Any]]]:
    """``unnest(CAST(:c0 AS t0[]), ...)`` over ``columns`` and its parameters."""
    casts = [f"CAST(:c{i} AS {_array_type(table.c[c])}[])" for i, c in enumerate(columns)]
    params = {f"c{i}": [row.get(c) for row in rows] for i, c in enumerate(columns)}
    return f"unnest({', '.join(casts)})", params


async def insert_rows(
    conn: AsyncConnection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    targets: Mapping[str, str],
    *,
    on_conflict: str = "",
) -> None:
    """Insert ``rows`` (dicts with every column of ``table``) in one statement.

    ``on_conflict`` is appended as written, e.g. ``ON CONFLICT (k) DO NOTHING``;
    ``t`` is the target table's alias in it.
    """
    if not rows:
        return
    columns = [c.name for c in table.columns]
    source, params = _unnest(table, columns, rows)
    name = _table_name(table, targets)
    # Identifiers come from Table objects and code constants; values are parameters.
    sql = f"INSERT INTO {name} AS t ({', '.join(columns)}) SELECT * FROM {source} {on_conflict}"  # noqa: S608
    await conn.execute(sa.text(sql), params)


async def update_rows(
    conn: AsyncConnection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]] | Changes[Any],
    targets: Mapping[str, str],
    *,
    match: Sequence[str],
    assign: Mapping[str, str],
) -> None:
    """``UPDATE`` existing rows from ``rows`` in one statement.

    ``match`` are the columns that find a row; ``assign`` maps each column
    to set to an SQL expression over ``v.<column>`` (the row's value for a
    column of ``match`` or ``assign``, NULL when the row lacks it) and
    ``t.<column>`` (the current ones). ``Changes`` stand for their
    ``updates``, keyed by the ``match`` columns.
    """
    if isinstance(rows, Changes):
        rows = [_keyed(match, key) | values for key, values in rows.updates.items()]
    if not rows:
        return
    columns = [*match, *(c for c in assign if c not in match)]
    source, params = _unnest(table, columns, rows)
    sets = ", ".join(f"{column} = {expr}" for column, expr in assign.items())
    where = " AND ".join(f"t.{c} = v.{c}" for c in match)
    target = _table_name(table, targets)
    values = f"{source} AS v({', '.join(columns)})"
    sql = f"UPDATE {target} AS t SET {sets} FROM {values} WHERE {where}"  # noqa: S608
    await conn.execute(sa.text(sql), params)
