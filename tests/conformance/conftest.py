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

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.conformance.s3_support import S3Endpoint  # noqa: E402 - needs the path above

CEPH_ENDPOINT = S3Endpoint.from_environ(os.environ)
