"""Settings for the backend conformance suites: the Ceph RGW endpoint, if one is given.

``suite.py`` and ``s3_support.py`` are imported as ``tests.conformance.*``
(pytest's ``pythonpath = ["."]`` in pyproject.toml). The moto endpoint is the
shared ``moto_endpoint`` fixture of ``tests/s3_endpoints.py``. The ``S3_*``
variables that point the Ceph suite at a real RADOS Gateway are read once, at
import, before any per-test environment isolation runs.
"""

from __future__ import annotations

import os

from tests.conformance.s3_support import S3Endpoint

CEPH_ENDPOINT = S3Endpoint.from_environ(os.environ)
