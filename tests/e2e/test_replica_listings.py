"""S3 listings across replicas: a continuation token from one server continues on another.

Two real ``artifactstore serve`` processes, each with its own data dir, on one
database (DESIGN section 13: no per-replica state that must agree), read
through boto3 as a load balancer without session affinity would send it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest
from tests.e2e.serverproc import Server, anonymous_s3, cli

from artifactstore.gateway.listing import TOKEN_KEY_FILE

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FILES = 9


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

    clients = [anonymous_s3(first), anonymous_s3(second)]
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


def test_a_second_server_on_one_data_dir_leaves_the_first_ones_handoff_socket(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """Two servers share a data dir: the socket stays the first one's; the second serves none."""
    first = start_server()
    socket_path = first.data_dir / "handoff.sock"
    headers = {"Authorization": f"Bearer {first.env['ARTIFACTSTORE_TOKEN']}"}
    before = httpx.get(f"{first.url}/v1/uploads/handoff", headers=headers).json()
    inode = socket_path.stat().st_ino
    second = start_server(data_dir=first.data_dir)
    assert httpx.get(f"{second.url}/v1/uploads/handoff", headers=headers).status_code == 404
    assert httpx.get(f"{first.url}/v1/uploads/handoff", headers=headers).json() == before
    assert socket_path.stat().st_ino == inode
    assert "another server on this data dir" in second.log_path.read_text(errors="replace")
    src = tmp_path / "via-first"
    src.mkdir()
    (src / "a.txt").write_text("handed over\n")
    up = cli("upload", "same-dir", "1.0", str(src), env=first.client_env())
    assert up.returncode == 0, up.stderr
