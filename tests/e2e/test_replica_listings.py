"""S3 listings across replicas: a continuation token from one server continues on another.

Two real ``artifactstore serve`` processes, each with its own data dir, on one
database (DESIGN section 13: no per-replica state that must agree), read
through boto3 as a load balancer without session affinity would send it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from tests.e2e.serverproc import Server, cli

from artifactstore.gateway.listing import TOKEN_KEY_FILE

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FILES = 9


def _s3(server: Server) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=server.s3_url,
        region_name="us-east-1",
        config=Config(
            signature_version=UNSIGNED,  # anonymous reads: the gateway listens on loopback
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
        ),
    )


def test_continuation_token_from_one_replica_continues_on_another(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """Pages of MaxKeys=2 fetched alternately from two replicas join with no gap or repeat."""
    first, second = start_server(), start_server()
    assert first.data_dir != second.data_dir
    src = tmp_path / "src"
    src.mkdir()
    for i in range(FILES):
        (src / f"f{i}.txt").write_text(f"file {i}\n")
    up = cli("upload", "demo", "1.0", str(src), env=first.client_env())
    assert up.returncode == 0, up.stderr
    expected = sorted(f"1.0/src/f{i}.txt" for i in range(FILES))  # a directory keeps its name

    clients = [_s3(first), _s3(second)]
    page = clients[0].list_objects_v2(Bucket="demo", MaxKeys=2)
    keys = [o["Key"] for o in page["Contents"]]
    turn = 1
    while page["IsTruncated"]:
        page = clients[turn % 2].list_objects_v2(
            Bucket="demo", MaxKeys=2, ContinuationToken=page["NextContinuationToken"]
        )
        keys += [o["Key"] for o in page.get("Contents", [])]
        turn += 1
    assert keys == expected
    assert turn == (FILES + 1) // 2  # five pages: both replicas answered continuations
    for server in (first, second):
        assert not (server.data_dir / TOKEN_KEY_FILE).exists()
