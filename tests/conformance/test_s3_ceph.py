"""The conformance suite against a real Ceph RADOS Gateway (DESIGN section 9).

Runs only when ``S3_ENDPOINT_URL``, ``S3_ACCESS_KEY_ID`` and
``S3_SECRET_ACCESS_KEY`` are set, for example from
``../shared/services/ceph-rgw/start > s3.env``; skipped otherwise.
"""

from __future__ import annotations

import pytest
from tests.conformance.conftest import CEPH_ENDPOINT
from tests.conformance.s3_support import S3Conformance, S3Endpoint

pytestmark = [
    pytest.mark.ceph,
    pytest.mark.skipif(
        CEPH_ENDPOINT is None,
        reason="no Ceph RGW: set S3_ENDPOINT_URL, S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY",
    ),
]


class TestS3Ceph(S3Conformance):
    """The contract on a real RADOS Gateway, a fresh bucket per test."""

    @pytest.fixture
    def s3_endpoint(self) -> S3Endpoint:
        """The endpoint named by the S3_* variables read at session start."""
        assert CEPH_ENDPOINT is not None
        return CEPH_ENDPOINT
