"""Multi-row statements: pending changes per key, their SQL, and sending many as one.

A batch's changes to one table are collected per primary key in Python
(``Changes``), in event order, then written with one statement per kind of
change: ``UPDATE ... FROM unnest(...)`` for rows that existed before the
batch, then ``INSERT ... SELECT FROM unnest(...)`` (with ``ON CONFLICT``
where the view upserts) for rows the batch creates. Each column travels as
one array parameter, so a statement costs the same few round trips for one
row or fifty thousand.

Statements address a table by name through ``Targets`` (live name -> name
to write), so the same fold fills the live views or a replay's shadow
tables. They are collected in a ``StatementBatch`` and sent together: the
statements on distinct tables go as one ``WITH s0 AS (...), s1 AS (...)``
statement (one round trip, which matters under the log lock: a journal
transaction's event insert and every view change are one statement). A
statement on a table already in the group starts the next group, because
PostgreSQL runs the parts of one statement on one snapshot and they must
not touch one row twice. This module knows no event types; ``views.fold``
does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import sqlalchemy as sa

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["Changes", "StatementBatch", "Targets", "delete_rows", "insert_rows", "update_rows"]

K = TypeVar("K")

Targets = dict[str, str]
"""Live table name -> the table a fold writes (absent: the live table itself)."""

_ARRAY_TYPES: tuple[tuple[type[sa.types.TypeEngine[Any]], str], ...] = (
    (sa.Uuid, "uuid"),
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


@dataclass(frozen=True, slots=True)
class _Statement:
    table: str
    sql: str
    params: dict[str, list[Any]]


class StatementBatch:
    """Statements collected in order, sent with as few round trips as is safe."""

    def __init__(self) -> None:
        self.statements: list[_Statement] = []

    def add(self, table: str, sql: str, params: dict[str, list[Any]]) -> None:
        """Queue ``sql`` (parameters ``:c0``, ``:c1``, ...) that writes ``table``."""
        self.statements.append(_Statement(table, sql, params))

    async def run(self, conn: AsyncConnection) -> None:
        """Execute every statement in order: each group of distinct tables as one."""
        group: list[_Statement] = []
        for statement in self.statements:
            if any(s.table == statement.table for s in group):
                await _execute(conn, group)
                group = []
            group.append(statement)
        if group:
            await _execute(conn, group)
        self.statements.clear()


async def _execute(conn: AsyncConnection, group: Sequence[_Statement]) -> None:
    if len(group) == 1:
        await conn.execute(sa.text(group[0].sql), group[0].params)
        return
    parts: list[str] = []
    params: dict[str, list[Any]] = {}
    for i, statement in enumerate(group):
        renamed = _PARAM.sub(f":s{i}_" + r"\1", statement.sql)
        parts.append(f"s{i} AS ({renamed})")
        params.update({f"s{i}_{name}": value for name, value in statement.params.items()})
    await conn.execute(sa.text(f"WITH {', '.join(parts)} SELECT 1"), params)


_PARAM = re.compile(r":(c\d+)\b")


def insert_rows(
    batch: StatementBatch,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    targets: Mapping[str, str],
    *,
    on_conflict: str = "",
) -> None:
    """Queue the insert of ``rows`` (dicts with every column of ``table``) as one statement.

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
    batch.add(name, sql, params)


def update_rows(
    batch: StatementBatch,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]] | Changes[Any],
    targets: Mapping[str, str],
    *,
    match: Sequence[str],
    assign: Mapping[str, str],
) -> None:
    """Queue an ``UPDATE`` of existing rows from ``rows`` as one statement.

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
    batch.add(target, sql, params)


def delete_rows(
    batch: StatementBatch,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    targets: Mapping[str, str],
    *,
    match: Sequence[str],
) -> None:
    """Queue a ``DELETE`` of the rows whose ``match`` columns equal one of ``rows``."""
    if not rows:
        return
    source, params = _unnest(table, match, rows)
    where = " AND ".join(f"t.{c} = v.{c}" for c in match)
    target = _table_name(table, targets)
    values = f"{source} AS v({', '.join(match)})"
    sql = f"DELETE FROM {target} AS t USING {values} WHERE {where}"  # noqa: S608
    batch.add(target, sql, params)
