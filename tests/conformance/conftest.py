"""Fixtures for the backend conformance suites: import path, moto server, Ceph settings.

``suite.py`` and ``s3_support.py`` are imported as ``tests.conformance.*`` (the
name mypy checks them under), so the repository root goes on ``sys.path``
here; ``tests/`` has no ``__init__.py`` and pytest only adds this directory.

The ``S3_*`` variables that point the Ceph suite at a real RADOS Gateway are
read once, at import, before any per-test environment isolation runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.conformance.s3_support import S3Endpoint  # noqa: E402 - needs the path above

if TYPE_CHECKING:
    from collections.abc import Iterator

CEPH_ENDPOINT = S3Endpoint.from_environ(os.environ)


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
