"""Database-side CLI commands: ``token``, ``db upgrade``, ``events verify`` and ``replay``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from tests.e2e.serverproc import Server, cli

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.e2e


def _upload(server: Server, tmp_path: Path, env: dict[str, str]) -> int:
    (tmp_path / "payload.txt").write_text("payload\n")
    return cli("upload", "demo", "1.0", str(tmp_path / "payload.txt"), env=env).returncode


def test_token_create_list_revoke(server: Server, tmp_path: Path) -> None:
    """A created token works at its scope, is listed by name, and stops working when revoked."""
    env = server.client_env()
    made = cli("token", "create", "--scope", "read", "--name", "reader", "--json", env=env)
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["name"] == "reader"
    assert created["scope"] == "read"
    assert created["token"].startswith("ast_")

    listed = json.loads(cli("token", "list", "--json", env=env).stdout)
    by_name = {t["name"]: t for t in listed}
    assert by_name["reader"]["scope"] == "read"
    assert by_name["reader"]["revoked"] is False
    assert created["token"] not in json.dumps(listed)

    reader_env = {**env, "ARTIFACTSTORE_TOKEN": created["token"]}
    assert _upload(server, tmp_path, reader_env) == 2  # read scope cannot write
    writer = cli("token", "create", "--scope", "write", env=env)
    assert writer.returncode == 0, writer.stderr
    writer_env = {**env, "ARTIFACTSTORE_TOKEN": writer.stdout.strip()}
    assert _upload(server, tmp_path, writer_env) == 0

    revoked = cli("token", "revoke", "reader", env=env)
    assert revoked.returncode == 0, revoked.stderr
    table = cli("token", "list", env=env).stdout.splitlines()
    assert table[0].split() == ["NAME", "SCOPE", "CREATED", "STATE"]
    row = next(line.split() for line in table if line.startswith("reader "))
    assert row[-1] == "revoked"
    ls = cli("ls", env=reader_env)
    assert ls.returncode == 2
    assert "revoked" in ls.stderr


def test_token_errors(server: Server) -> None:
    """A taken name and an unknown token name are clear errors, a bad scope a usage error."""
    env = server.client_env()
    assert cli("token", "create", "--name", "twice", env=env).returncode == 0
    again = cli("token", "create", "--name", "twice", env=env)
    assert again.returncode == 1
    assert "exists" in again.stderr
    assert cli("token", "revoke", "nobody", env=env).returncode == 2
    assert cli("token", "create", "--scope", "root", env=env).returncode == 2


def test_db_upgrade_is_idempotent(server: Server) -> None:
    """``db upgrade`` on a current database succeeds and names the revision."""
    result = cli("db", "upgrade", env=server.client_env())
    assert result.returncode == 0, result.stderr
    assert "schema revision" in result.stdout
    assert "password" not in result.stdout


def test_events_verify_and_replay(server: Server, tmp_path: Path) -> None:
    """After real traffic the chain verifies and a replay reproduces the views."""
    env = server.client_env()
    assert _upload(server, tmp_path, env) == 0
    verified = cli("events", "verify", "--json", env=env)
    assert verified.returncode == 0, verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"] is True
    assert report["events"] == report["head_seq"] >= 3
    check = cli("events", "replay", "--check", env=env)
    assert check.returncode == 0, check.stderr
    assert "views match" in check.stdout
    rebuilt = cli("events", "replay", env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"replayed {report['events']} events" in rebuilt.stdout
    listing = cli("ls", "demo", "1.0", env=env)
    assert "payload.txt" in listing.stdout


async def test_events_verify_detects_an_edited_event(
    server: Server, tmp_path: Path, engine: AsyncEngine
) -> None:
    """An event row edited behind the trigger's back fails ``events verify`` with exit 1."""
    env = server.client_env()
    assert _upload(server, tmp_path, env) == 0
    async with engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE events DISABLE TRIGGER USER"))
        await conn.execute(sa.text("UPDATE events SET actor = 'mallory' WHERE seq = 2"))
        await conn.execute(
            sa.text("UPDATE events SET payload = payload || '\\x00'::bytea WHERE seq = 2")
        )
        await conn.execute(sa.text("ALTER TABLE events ENABLE TRIGGER USER"))
    result = cli("events", "verify", env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "seq 2" in lines[0]
