"""Integration fixtures: a registry on a real PostgreSQL and a real local backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from artifactstore.api.app import create_app
from artifactstore.config import DatabaseSettings, Settings
from artifactstore.registry import Registry, Tokens

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Default settings under ``tmp_path`` on this test's database."""
    return Settings(data_dir=tmp_path / "data", database=DatabaseSettings(url=database_url))


@pytest.fixture
async def registry(settings: Settings) -> AsyncIterator[Registry]:
    """An open registry (schema migrated by the database fixture)."""
    async with await Registry.open(settings) as opened:
        yield opened


@pytest.fixture
async def admin_token(registry: Registry) -> str:
    """A fresh admin token on the test database."""
    return await Tokens(registry.engine).create("test-admin", "admin", actor="test")


@pytest.fixture
async def api(
    settings: Settings, registry: Registry, admin_token: str
) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of the real app (lifespan run), authenticated as admin."""
    app = create_app(settings, registry=registry, host="127.0.0.1", bootstrap_token=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://127.0.0.1",
            headers={"Authorization": f"Bearer {admin_token}"},
        ) as client:
            yield client
