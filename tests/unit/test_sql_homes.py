"""Each table's SQL has one home: blob views in ``registry/queries/blobs.py``, secrets in theirs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import artifactstore

SOURCE = Path(artifactstore.__file__).parent
BLOB_VIEWS = frozenset({"blobs", "storage_locations"})
# VIEW_TABLES holds both views (views.replay and views.snapshot walk it).
TABLE_OBJECTS = BLOB_VIEWS | {"VIEW_TABLES"}
SERVER_SECRETS = frozenset({"server_secrets"})


def _sql_text(names: frozenset[str]) -> re.Pattern[str]:
    alternatives = "|".join(sorted(names))
    return re.compile(rf"(?i)\b(?:from|join|into|update|table)\s+(?:{alternatives})\b")


# Where the blob views may be named, and why:
# - db/: tables.py defines them (engine, migrations and embedded PostgreSQL name no view);
# - views/: the write side, replay and snapshot, and ``views.readable_copies``,
#   which the journal runs under the log lock;
# - registry/queries/blobs.py: every read outside views/;
# - registry/rebuild.py: the online replay shadows and swaps every table of
#   VIEW_TABLES as a whole, without SQL of its own over their rows.
# Not an exception: storage/postgres.py imports ``metadata`` from db.tables, but
# only to create its own tables (``blob_blocks``, ``blob_objects``); a lookup of
# a blob view through ``metadata.tables`` would be caught below.
HOMES = ("db/", "views/", "registry/queries/blobs.py", "registry/rebuild.py")
# ``server_secrets`` (secrets every replica shares, never events): db/tables.py
# declares it, registry/server_secrets.py is its only reader and writer.
SECRET_HOMES = ("db/", "registry/server_secrets.py")


def _names_view(target: ast.expr, keys: list[ast.expr], names: frozenset[str]) -> bool:
    """``target`` is a table collection or constructor and one of ``keys`` is in ``names``."""
    return ast.unparse(target).lower().endswith(("tables", "table")) and any(
        isinstance(k, ast.Constant) and k.value in names for k in keys
    )


def _references(
    source: str, names: frozenset[str] = BLOB_VIEWS, objects: frozenset[str] = TABLE_OBJECTS
) -> set[str]:
    """The spellings in ``source`` that reach a table of ``names`` or name it in SQL text."""
    found: set[str] = set()
    sql_text = _sql_text(names)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "artifactstore.db.tables":
            found |= {f"import {a.name}" for a in node.names if a.name in objects}
        elif isinstance(node, ast.Attribute) and node.attr in objects:
            if ast.unparse(node.value).endswith("tables"):  # tables.blobs, db.tables.blobs
                found.add(f"attribute {ast.unparse(node)}")
        elif isinstance(node, ast.Subscript) and _names_view(node.value, [node.slice], names):
            found.add(f"lookup {ast.unparse(node)[:60]}")  # metadata.tables["blobs"]
        elif isinstance(node, ast.Call) and _names_view(node.func, node.args[:1], names):
            found.add(f"table {ast.unparse(node)[:60]}")  # sa.table("blobs", ...)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and sql_text.search(node.value)
        ):
            found.add(f"SQL {node.value[:60]!r}")
    return found


def _strays(
    homes: tuple[str, ...], names: frozenset[str], objects: frozenset[str]
) -> dict[str, list[str]]:
    """Each module outside ``homes`` that reaches a table of ``names``, with how it does."""
    strays: dict[str, list[str]] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE).as_posix()
        if not relative.startswith(homes) and (
            found := _references(path.read_text(), names, objects)
        ):
            strays[relative] = sorted(found)
    return strays


def test_blob_views_are_named_only_in_their_homes() -> None:
    """Outside db/, views/ and queries/blobs.py no module reaches blobs or storage_locations."""
    assert _strays(HOMES, BLOB_VIEWS, TABLE_OBJECTS) == {}
    assert _references((SOURCE / "registry/queries/blobs.py").read_text())


def test_every_spelling_of_a_blob_view_is_caught() -> None:
    """An import, a ``tables.`` attribute, a table looked up by name and SQL text each count."""
    spellings = [
        "from artifactstore.db.tables import blobs",
        "from artifactstore.db.tables import packages, storage_locations",
        "from artifactstore.db.tables import VIEW_TABLES",
        "from artifactstore.db import tables\ntables.storage_locations",
        "import artifactstore.db.tables\nartifactstore.db.tables.blobs",
        "metadata.tables['storage_locations']",
        "sa.table('blobs', sa.column('sha256'))",
        "sa.text('SELECT count(*) FROM blobs')",
        "sa.text('select 1 from packages p join storage_locations l on true')",
    ]
    for source in spellings:
        assert _references(source), source
    harmless = [
        "from artifactstore.db.tables import blob_blocks, blob_objects, metadata",
        "metadata.create_all(tables=[blob_blocks, blob_objects])",
        "name = 'artifactstore_storage_locations'",
        "store.blobs",
        "router = APIRouter(tags=['blobs'])",
        "body = {'blobs': []}",
    ]
    for source in harmless:
        assert not _references(source), source


def test_server_secrets_are_named_only_in_their_home() -> None:
    """Outside db/ and registry/server_secrets.py no module reaches the server_secrets table."""
    assert _strays(SECRET_HOMES, SERVER_SECRETS, SERVER_SECRETS) == {}
    home = (SOURCE / "registry/server_secrets.py").read_text()
    assert _references(home, SERVER_SECRETS, SERVER_SECRETS)
    for stray in (
        "from artifactstore.db.tables import server_secrets",
        "'SELECT value FROM server_secrets'",
    ):
        assert _references(stray, SERVER_SECRETS, SERVER_SECRETS), stray
    assert not _references(
        "from artifactstore.registry.server_secrets import shared_secret",
        SERVER_SECRETS,
        SERVER_SECRETS,
    )


SESSION_TABLES = frozenset({"upload_sessions", "upload_parts"})
# ``upload_sessions`` rows live in registry/session_rows.py, the pieces of
# database-staged sessions (``upload_parts``) in registry/staged_parts.py
# (docs/design/0007); db/tables.py declares both.
SESSION_HOMES = ("db/", "registry/session_rows.py", "registry/staged_parts.py")


def test_upload_session_tables_are_named_only_in_their_homes() -> None:
    """Outside db/, session_rows.py and staged_parts.py no module reaches the session tables."""
    assert _strays(SESSION_HOMES, SESSION_TABLES, SESSION_TABLES) == {}
    for home in SESSION_HOMES[1:]:
        assert _references((SOURCE / home).read_text(), SESSION_TABLES, SESSION_TABLES), home
