"""The CLI stays light: client commands never load the registry or SQLAlchemy."""

from __future__ import annotations

import subprocess
import sys

from artifactstore.cli.storage import DEFAULT_VERIFY_CONCURRENCY
from artifactstore.registry.verify import DEFAULT_CONCURRENCY


def test_verify_default_matches_the_registry() -> None:
    """The CLI's copy of the verify concurrency default equals the registry's."""
    assert DEFAULT_VERIFY_CONCURRENCY == DEFAULT_CONCURRENCY


def test_importing_the_cli_does_not_import_sqlalchemy() -> None:
    """`artifactstore --help` and the HTTP commands start without the database layer."""
    code = "import sys, artifactstore.cli.main; print('sqlalchemy' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"
