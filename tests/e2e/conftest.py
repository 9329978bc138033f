"""End-to-end fixtures: servers started on demand (see ``serverproc``), stopped at teardown."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from tests.e2e.serverproc import Server, base_env, cli, free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


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
        env = base_env(tmp_path)
        env["ARTIFACTSTORE_DATA_DIR"] = str(directory)
        if not embedded:
            env["ARTIFACTSTORE_DATABASE_URL"] = database_url
        if config is not None:
            env["ARTIFACTSTORE_CONFIG"] = str(config)
        env.update(extra_env or {})
        server = Server(directory, free_port(), free_port(), env)
        server.start()
        started.append(server)
        if not embedded:
            made = cli(
                "token",
                "create",
                "--name",
                f"e2e{len(started)}",
                "--scope",
                "admin",
                "--json",
                env=env,
            )
            assert made.returncode == 0, made.stderr
            server.env["ARTIFACTSTORE_TOKEN"] = json.loads(made.stdout)["token"]
        return server

    yield start
    for server in started:
        server.stop()
        server.close()


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    """One running server on this test's database."""
    return start_server()
