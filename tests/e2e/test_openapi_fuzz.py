"""Schemathesis against the real server's ``/openapi.json``: no input earns a 5xx.

Bounded: a few dozen generated requests per operation, authenticated as
admin so the writes are exercised too. The SSE stream is left out (it never
ends by design).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok
from tests.e2e.serverproc import Server, base_env, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from schemathesis import Case

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 25


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[Server]:
    """One zero-configuration server (embedded PostgreSQL) for the whole module."""
    root = Path(tempfile.mkdtemp(prefix="artifactstore-fuzz-"))
    env = base_env(root)
    env["ARTIFACTSTORE_DATA_DIR"] = str(root / "data")
    server = Server(root / "data", free_port(), free_port(), env)
    server.data_dir.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.close()
        shutil.rmtree(root, ignore_errors=True)


def test_no_generated_request_gets_a_server_error(fuzz_server: Server) -> None:
    """Whatever schemathesis generates for each operation, the answer is never a 5xx."""
    document = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    schema = document.exclude(path="/v1/events/stream")
    token = (fuzz_server.data_dir / "admin-token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case: Case[Any]) -> None:
            response = case.call(base_url=fuzz_server.url, headers=headers)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code}")

        check()
    assert operations >= 15
    assert failures == []
