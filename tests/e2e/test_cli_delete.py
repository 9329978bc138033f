"""``artifactstore delete`` end to end: two real replicas on one database, the real CLI, boto3.

A file read through one replica's S3 gateway sits in its catalog cache; a
delete made through the other replica must take it away there too (the
gateway hears of deletions through the event log's NOTIFY).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from botocore.exceptions import ClientError
from tests.e2e.serverproc import Server, anonymous_s3, cli

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

pytestmark = [pytest.mark.e2e]

KEY = "1.0/src/f.txt"


def _missing(s3: S3Client, key: str) -> bool:
    """HEAD answers 404 (each replica has its own local backend: HEAD reads no bytes)."""
    try:
        s3.head_object(Bucket="demo", Key=key)
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    return False


def test_delete_reaches_the_other_replicas_gateway_and_is_final(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """Deleted on one replica: 404 and unlisted on the other; never published again."""
    first, second = start_server(), start_server()
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("one\n")
    for version in ("1.0", "2.0"):
        up = cli("upload", "demo", version, str(src), env=first.client_env())
        assert up.returncode == 0, up.stderr
    other = anonymous_s3(second)
    assert other.head_object(Bucket="demo", Key=KEY)["ContentLength"] == 4  # now cached

    gone = cli("delete", "demo", "1.0", "--reason", "bad build", env=first.client_env())
    assert gone.returncode == 0, gone.stderr
    assert gone.stdout.strip() == "deleted demo 1.0"
    second.wait_until("the other replica still serves a deleted file", lambda: _missing(other, KEY))
    listed = other.list_objects_v2(Bucket="demo")
    assert [o["Key"] for o in listed["Contents"]] == ["2.0/src/f.txt"]

    again = cli("upload", "demo", "1.0", str(src), env=second.client_env())
    assert again.returncode == 1
    assert "demo 1.0 was deleted" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1, again.stderr
    twice = cli("delete", "demo", "1.0", env=second.client_env())
    assert twice.returncode == 2
    assert "not found" in twice.stderr

    every = cli("delete", "demo", "--all", env=second.client_env())
    assert every.returncode == 0, every.stderr
    assert every.stdout.strip() == "deleted demo 2.0"
    second.wait_until("2.0 still served", lambda: _missing(other, "2.0/src/f.txt"))
    replay = cli("events", "replay", "--check", env=first.env)
    assert replay.returncode == 0, replay.stdout + replay.stderr
