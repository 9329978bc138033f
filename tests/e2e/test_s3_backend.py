"""End to end on an S3 backend: the real server storing blobs in moto, or in a real Ceph RGW.

The Ceph leg runs when ``S3_ENDPOINT_URL`` and its keys are set (``.ci/run``
starts ``../shared/services/ceph-rgw``); the moto leg always runs.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

import pytest
from tests.conformance.s3_support import S3Endpoint, empty_bucket, s3_server_config
from tests.e2e.serverproc import Server, cli

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.e2e

CEPH = S3Endpoint.from_environ(os.environ)


def _round_trip(endpoint: S3Endpoint, start_server: Callable[..., Server], tmp_path: Path) -> None:
    bucket = f"e2e-{uuid.uuid4().hex[:12]}"
    client = endpoint.raw_client()
    client.create_bucket(Bucket=bucket)
    try:
        config = tmp_path / "artifactstore.toml"
        toml, key_env = s3_server_config(
            endpoint,
            bucket,
            key_prefix="e2e",
            multipart_threshold_bytes=8388608,
            multipart_chunk_bytes=5242880,
        )
        config.write_text(toml)
        server = start_server(config=config, extra_env=key_env)
        src = tmp_path / "release"
        src.mkdir()
        (src / "small.txt").write_text("small\n")
        (src / "large.bin").write_bytes(os.urandom(12 * 1024 * 1024))
        env = server.client_env()
        up = cli("upload", "s3demo", "1.0", str(src), env=env)
        assert up.returncode == 0, up.stderr
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert keys
        assert all(k.startswith("e2e/sha256/") for k in keys)
        out = tmp_path / "out"
        down = cli("download", "s3demo", "1.0", "--output", str(out), env=env)
        assert down.returncode == 0, down.stderr
        for name in ("small.txt", "large.bin"):
            assert (out / "release" / name).read_bytes() == (src / name).read_bytes()
        server.stop()
    finally:
        empty_bucket(client, bucket)


def test_upload_and_download_through_moto(
    moto_endpoint: S3Endpoint, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """A server whose only backend is S3 (moto) stores under the key layout and reads back."""
    _round_trip(moto_endpoint, start_server, tmp_path)


@pytest.mark.ceph
@pytest.mark.skipif(CEPH is None, reason="no Ceph RGW: set S3_ENDPOINT_URL and its keys")
def test_upload_and_download_through_ceph(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """The same round trip against a real Ceph RADOS Gateway."""
    assert CEPH is not None
    _round_trip(CEPH, start_server, tmp_path)
