"""Each view's SQL has one home: the blob views are read only in ``registry/queries/blobs.py``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import artifactstore

SOURCE = Path(artifactstore.__file__).parent
BLOB_VIEWS = frozenset({"blobs", "storage_locations"})
# VIEW_TABLES holds both views (views.replay and views.snapshot walk it).
TABLE_OBJECTS = BLOB_VIEWS | {"VIEW_TABLES"}
SQL_TEXT = re.compile(r"(?i)\b(?:from|join|into|update|table)\s+(?:blobs|storage_locations)\b")

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


def _names_view(target: ast.expr, keys: list[ast.expr]) -> bool:
    """``target`` is a table collection or constructor and one of ``keys`` is a blob view's name."""
    return ast.unparse(target).lower().endswith(("tables", "table")) and any(
        isinstance(k, ast.Constant) and k.value in BLOB_VIEWS for k in keys
    )


def _references(source: str) -> set[str]:
    """The spellings in ``source`` that reach a blob view's table or name it in SQL text."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "artifactstore.db.tables":
            found |= {f"import {a.name}" for a in node.names if a.name in TABLE_OBJECTS}
        elif isinstance(node, ast.Attribute) and node.attr in TABLE_OBJECTS:
            if ast.unparse(node.value).endswith("tables"):  # tables.blobs, db.tables.blobs
                found.add(f"attribute {ast.unparse(node)}")
        elif isinstance(node, ast.Subscript) and _names_view(node.value, [node.slice]):
            found.add(f"lookup {ast.unparse(node)[:60]}")  # metadata.tables["blobs"]
        elif isinstance(node, ast.Call) and _names_view(node.func, node.args[:1]):
            found.add(f"table {ast.unparse(node)[:60]}")  # sa.table("blobs", ...)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and SQL_TEXT.search(node.value)
        ):
            found.add(f"SQL {node.value[:60]!r}")
    return found


def test_blob_views_are_named_only_in_their_homes() -> None:
    """Outside db/, views/ and queries/blobs.py no module reaches blobs or storage_locations."""
    strays = {}
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE).as_posix()
        if relative.startswith(HOMES):
            continue
        if found := _references(path.read_text()):
            strays[relative] = sorted(found)
    assert strays == {}
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
