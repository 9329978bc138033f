"""The real server while its PostgreSQL is away: 503s to retry, then recovery without a restart.

Two ways the database goes: the embedded cluster's postmaster is SIGKILLed
(the server's supervisor restarts it), and an external server (a throwaway
cluster this test owns, named by ``ARTIFACTSTORE_DATABASE_URL``) shuts down
immediately (SIGQUIT, what ``pg_ctl stop -m immediate`` sends) and is
started again by the test. Requests go through the real CLI, httpx and the
S3 gateway.
"""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING

import httpx
import pytest
from tests.e2e.serverproc import Server, base_env, cli

from artifactstore.db.embedded import start_throwaway_cluster
from artifactstore.db.outage import RETRY_AFTER_SECONDS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RECOVERY_DEADLINE_SECONDS = 120.0
# PostgreSQL's defaults: what was committed survives the immediate shutdown.
DURABLE: dict[str, str] = {}


def _postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().splitlines()[0])


def _publish(server: Server, tmp_path: Path, version: str, text: str) -> None:
    src = tmp_path / f"src-{version}"
    src.mkdir()
    (src / "notes.txt").write_text(text)
    up = cli("upload", "demo", version, str(src / "notes.txt"), env=server.client_env())
    assert up.returncode == 0, up.stderr


def _token(server: Server) -> str:
    return server.env.get("ARTIFACTSTORE_TOKEN") or (
        (server.data_dir / "admin-token").read_text().strip()
    )


def _shape(answer: httpx.Response) -> tuple[int, str, str, str | None]:
    """Status, content type, error code and Retry-After of an answer."""
    kind = answer.headers.get("content-type", "")
    code = answer.json()["error"]["code"] if kind == "application/json" else answer.text[:40]
    return answer.status_code, kind, code, answer.headers.get("retry-after")


UNAVAILABLE = (503, "application/json", "database_unavailable", str(RETRY_AFTER_SECONDS))


def _wait_until_served(
    rest: httpx.Client, path: str, restarted: Callable[[], bool] = lambda: True
) -> None:
    """Poll until ``path`` answers 200 and ``restarted()``; every other answer is the 503 to retry."""  # noqa: E501
    deadline = time.monotonic() + RECOVERY_DEADLINE_SECONDS
    while True:
        answer = rest.get(path)
        if answer.status_code == 200 and restarted():
            return
        if answer.status_code != 200:
            assert _shape(answer) == UNAVAILABLE
        assert time.monotonic() < deadline, "the database never came back"
        time.sleep(0.2)


def _assert_recovered(server: Server, rest: httpx.Client, tmp_path: Path) -> None:
    """What was stored before is readable again, and a new publish works."""
    files = "/v1/packages/demo/versions/1.0/files/notes.txt"
    assert rest.get(files).text == "before the outage\n"
    out = tmp_path / "out"
    down = cli("download", "demo", "1.0", "--output", str(out), env=server.client_env())
    assert down.returncode == 0, down.stderr
    assert (out / "notes.txt").read_text() == "before the outage\n"
    _publish(server, tmp_path, "2.0", "after the outage\n")
    assert rest.get("/v1/packages/demo/versions/2.0/files/notes.txt").text == "after the outage\n"
    assert httpx.get(f"{server.s3_url}/demo/2.0/notes.txt").text == "after the outage\n"
    assert httpx.get(f"{server.url}/readyz").status_code == 200


def test_killed_embedded_postmaster_is_restarted_by_the_server(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """After kill -9 of the embedded postmaster, requests answer 503 JSON or succeed, never 500, and the server restarts the cluster itself."""  # noqa: E501
    server = start_server(embedded=True)
    _publish(server, tmp_path, "1.0", "before the outage\n")
    pgdata = server.data_dir / "postgres" / "data"
    old_pid = _postmaster_pid(pgdata)
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {_token(server)}"}
    ) as rest:
        assert rest.get("/v1/packages/demo/versions/1.0").status_code == 200
        os.kill(old_pid, signal.SIGKILL)
        _wait_until_served(
            rest,
            "/v1/packages/demo/versions/1.0",
            lambda: (pgdata / "postmaster.pid").exists() and _postmaster_pid(pgdata) != old_pid,
        )
        _assert_recovered(server, rest, tmp_path)
    log = server.log_path.read_text(errors="replace")
    assert "restarted by this server" in log, server.log_tail()
    assert "Internal Server Error" not in log


@pytest.fixture
def external_cluster(tmp_data_dir: Path) -> Iterator[tuple[str, Path]]:
    """A throwaway PostgreSQL cluster that is this test's "external" database, and its root."""
    root = tmp_data_dir / "external-pg"
    url, stop = start_throwaway_cluster(root, settings=DURABLE)
    try:
        yield url, root
    finally:
        stop()


def _shut_down_immediately(pgdata: Path) -> None:
    """SIGQUIT to the postmaster (``pg_ctl stop -m immediate``), and wait until it is gone."""
    os.kill(_postmaster_pid(pgdata), signal.SIGQUIT)
    deadline = time.monotonic() + RECOVERY_DEADLINE_SECONDS
    while (pgdata / "postmaster.pid").exists():
        assert time.monotonic() < deadline, "the database did not stop"
        time.sleep(0.05)


def _start_on(
    start_server: Callable[..., Server], url: str, tmp_path: Path
) -> tuple[Server, dict[str, str]]:
    env = {**base_env(tmp_path), "ARTIFACTSTORE_DATABASE_URL": url}
    migrated = cli("db", "upgrade", env=env)
    assert migrated.returncode == 0, migrated.stderr
    server = start_server(extra_env={"ARTIFACTSTORE_DATABASE_URL": url})
    return server, {"Authorization": f"Bearer {_token(server)}"}


def test_external_database_away_answers_503_and_recovers_without_restart(
    start_server: Callable[..., Server],
    external_cluster: tuple[str, Path],
    tmp_path: Path,
) -> None:
    """While an external database is down, REST answers 503 JSON and the gateway 503 XML; when it returns, requests succeed again."""  # noqa: E501
    url, root = external_cluster
    server, auth = _start_on(start_server, url, tmp_path)
    _publish(server, tmp_path, "1.0", "before the outage\n")
    with httpx.Client(base_url=server.url, headers=auth) as rest:
        _shut_down_immediately(root / "data")
        answers = [
            _shape(answer)
            for _ in range(3)  # the first notices the dead pool, the rest cannot connect
            for answer in (
                rest.get("/v1/packages/demo/versions/1.0"),
                rest.get("/v1/packages/demo/versions/1.0/files/notes.txt"),
                rest.post("/v1/uploads", json={"size": 3}),
                rest.post("/v1/blobs", content=b"new"),
            )
        ]
        assert answers == [UNAVAILABLE] * 12
        gateway = httpx.get(f"{server.s3_url}/demo/1.0/notes.txt")
        assert gateway.status_code == 503
        assert gateway.headers["content-type"] == "application/xml"
        assert b"<Code>ServiceUnavailable</Code>" in gateway.content
        assert httpx.get(f"{server.url}/readyz").status_code == 503
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        start_throwaway_cluster(root, settings=DURABLE)
        _wait_until_served(rest, "/v1/packages/demo/versions/1.0")
        _assert_recovered(server, rest, tmp_path)
    assert "Internal Server Error" not in server.log_path.read_text(errors="replace")


def test_pooled_connections_to_a_restarted_database_are_replaced(
    start_server: Callable[..., Server],
    external_cluster: tuple[str, Path],
    tmp_path: Path,
) -> None:
    """The first request after an external database restarted (none while it was down) succeeds: the pool drops its dead connections."""  # noqa: E501
    url, root = external_cluster
    server, auth = _start_on(start_server, url, tmp_path)
    _publish(server, tmp_path, "1.0", "before the outage\n")
    with httpx.Client(base_url=server.url, headers=auth) as rest:
        assert rest.get("/v1/packages/demo/versions/1.0").status_code == 200
        _shut_down_immediately(root / "data")
        start_throwaway_cluster(root, settings=DURABLE)
        answer = rest.get("/v1/packages/demo/versions/1.0")
        assert answer.status_code == 200, answer.text
