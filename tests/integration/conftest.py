"""Integration fixtures: a registry on a real PostgreSQL and a real local backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from artifactstore.config import DatabaseSettings, Settings
from artifactstore.registry import Registry

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
