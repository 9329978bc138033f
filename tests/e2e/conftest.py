"""End-to-end fixtures: servers started on demand (see ``serverproc``), stopped at teardown.

``replicas`` is three servers on one database and one moto bucket behind nginx
(``balancer``), as DESIGN section 13 deploys them.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from tests.conformance.s3_support import S3Endpoint, empty_bucket, s3_server_config
from tests.e2e.balancer import Balancer, nginx_or_skip
from tests.e2e.serverproc import Server, base_env, cli, free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

GATEWAY_ACCESS_KEY = "replicas"
GATEWAY_SECRET = "replicas-gateway-secret"  # a test credential on loopback


def _server_env(
    tmp_path: Path,
    directory: Path,
    database_url: str | None,
    config: Path | None,
    extra_env: dict[str, str] | None,
) -> dict[str, str]:
    """A server's environment: its data dir, the test database unless embedded, its config."""
    env = base_env(tmp_path)
    env["ARTIFACTSTORE_DATA_DIR"] = str(directory)
    if database_url is not None:
        env["ARTIFACTSTORE_DATABASE_URL"] = database_url
    if config is not None:
        env["ARTIFACTSTORE_CONFIG"] = str(config)
    env.update(extra_env or {})
    return env


def _admin_token(env: dict[str, str], name: str) -> str:
    """A new admin token, made with the real CLI on the server's database."""
    made = cli("token", "create", "--name", name, "--scope", "admin", "--json", env=env)
    assert made.returncode == 0, made.stderr
    token: str = json.loads(made.stdout)["token"]
    return token


@pytest.fixture
def start_server(
    tmp_path: Path, tmp_data_dir: Path, database_url: str
) -> Iterator[Callable[..., Server]]:
    """Start servers on demand: ``start_server(embedded=, data_dir=, config=, extra_env=)``."""
    started: list[Server] = []

    def start(
        *,
        embedded: bool = False,
        data_dir: Path | None = None,
        config: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> Server:
        # An embedded cluster runs as another account when we are root: its data
        # dir must not sit under pytest's 0700 base directory (tmp_data_dir).
        base = tmp_data_dir if embedded else tmp_path
        directory = data_dir or base / f"server{len(started)}"
        directory.mkdir(parents=True, exist_ok=True)
        url = None if embedded else database_url
        env = _server_env(tmp_path, directory, url, config, extra_env)
        server = Server(directory, free_port(), free_port(), env)
        server.start()
        started.append(server)
        if not embedded:
            server.env["ARTIFACTSTORE_TOKEN"] = _admin_token(env, f"e2e{len(started)}")
        return server

    yield start
    for server in started:
        server.stop()
        server.close()


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    """One running server on this test's database."""
    return start_server()


@dataclass
class Replicas:
    """Three replicas behind one nginx, sharing a database and an S3 bucket (their only backend)."""

    servers: list[Server]
    balancer: Balancer
    bucket: str
    s3: S3Client
    """A raw client of the bucket the replicas store blobs in (moto)."""

    def client_env(self) -> dict[str, str]:
        """Environment for CLI clients that talk to the balancer."""
        return {**self.servers[0].env, "ARTIFACTSTORE_SERVER": self.balancer.url}


@pytest.fixture
def replicas(tmp_path: Path, database_url: str, moto_endpoint: S3Endpoint) -> Iterator[Replicas]:
    """Three ``artifactstore serve`` replicas on one database and one moto bucket, behind nginx.

    The bucket is the default and only backend, so no route targets a local
    backend; the gateway accepts one SigV4/SigV2 credential on every replica.
    The replicas start at once, as after a deployment, and share one token.
    """
    nginx = nginx_or_skip()
    s3 = moto_endpoint.raw_client()
    bucket = f"replicas-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    toml, key_env = s3_server_config(moto_endpoint, bucket, key_prefix="blobs")
    config = tmp_path / "artifactstore.toml"
    config.write_text(
        f"{toml}\n[[gateway.credentials]]\naccess_key_id = {GATEWAY_ACCESS_KEY!r}\n"
        'secret_access_key_ref = "env:E2E_GATEWAY_SECRET"\n'
    )
    extra = {**key_env, "E2E_GATEWAY_SECRET": GATEWAY_SECRET}
    servers = []
    for i in range(1, 4):
        directory = tmp_path / f"replica{i}"
        directory.mkdir()
        env = _server_env(tmp_path, directory, database_url, config, extra)
        servers.append(Server(directory, free_port(), free_port(), env))
    try:
        for server in servers:
            server.spawn()
        for server in servers:
            server.wait_healthy()
        token = _admin_token(servers[0].env, "replicas")
        for server in servers:
            server.env["ARTIFACTSTORE_TOKEN"] = token
        balancer = Balancer.start(nginx, tmp_path / "nginx", servers)
        try:
            yield Replicas(servers, balancer, bucket, s3)
        finally:
            balancer.stop()
    finally:
        for server in servers:
            server.stop()
            server.close()
        empty_bucket(s3, bucket)
