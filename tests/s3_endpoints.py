"""S3 endpoints for tests: moto's threaded server, shared by every suite that needs S3.

Imported by ``tests/conftest.py`` so the fixture is visible everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from tests.conformance.s3_support import S3Endpoint

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["moto_endpoint"]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[S3Endpoint]:
    """One moto S3 server on 127.0.0.1 and a free port for the whole session."""
    from moto.server import ThreadedMotoServer  # noqa: PLC0415 - only S3 suites need moto

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Endpoint(
            url=f"http://{host}:{port}",
            access_key="moto-access-key",
            secret_key="moto-secret-key",
            region="us-east-1",
        )
    finally:
        server.stop()
