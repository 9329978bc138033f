"""The backend factory: one lazy lookup table from configuration type to opener."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from artifactstore.config import (
    LocalBackendSettings,
    PostgresBackendSettings,
    S3BackendSettings,
    StorageSettings,
)
from artifactstore.errors import BackendUnavailableError, ConfigError
from artifactstore.storage.factory import (
    BUILTIN_OPENERS,
    OpenerTable,
    default_openers,
    open_backend,
    open_backends,
    register_backend_type,
)
from artifactstore.storage.local import LocalBackend

ROOT = Path("/nonexistent/artifactstore-factory-test")


def test_builtin_table_names_the_three_backends_lazily() -> None:
    """local, postgres and s3 are wired in as 'module:function' strings."""
    assert dict(BUILTIN_OPENERS) == {
        "local": "artifactstore.storage.local:open_local",
        "postgres": "artifactstore.storage.postgres:open_postgres",
        "s3": "artifactstore.storage.s3:open_s3",
    }
    assert default_openers().kinds() == ("local", "postgres", "s3")


def test_builtin_local_and_s3_openers_resolve() -> None:
    """The built-in local and s3 entries import and resolve to their open functions."""
    from artifactstore.storage.local import open_local  # noqa: PLC0415
    from artifactstore.storage.s3 import open_s3  # noqa: PLC0415

    table = default_openers()
    assert table.resolve("local") is open_local
    assert table.resolve("s3") is open_s3


def test_duplicate_registration_is_refused() -> None:
    """Registering a type twice raises instead of silently replacing the opener."""
    table = default_openers()
    with pytest.raises(ValueError, match="already registered"):
        table.register("local", "somewhere.else:open_local")


def test_process_wide_table_refuses_a_second_local() -> None:
    """The process-wide table also refuses to register a built-in type again."""
    with pytest.raises(ValueError, match="'local' is already registered"):
        register_backend_type("local", "elsewhere:open_local")


def test_malformed_target_is_refused() -> None:
    """An opener path must be exactly 'module:function'."""
    with pytest.raises(ValueError, match="module:function"):
        OpenerTable({"x": "no_colon_here"})


def test_unknown_type_names_the_known_ones() -> None:
    """An unregistered type is a ConfigError listing the types that exist."""
    with pytest.raises(ConfigError, match="known: local, postgres, s3"):
        default_openers().resolve("ftp")


def test_missing_module_says_what_to_install() -> None:
    """A type whose module is not installed fails with an 'install ...' message."""
    table = OpenerTable({"s3": "artifactstore.storage._not_installed_s3:open_s3"})
    with pytest.raises(
        ConfigError, match=r"install artifactstore with its S3 dependencies"
    ) as info:
        table.resolve("s3")
    assert "_not_installed_s3" in info.value.message
    other = OpenerTable({"blob": "artifactstore_blob_plugin:open_blob"})
    with pytest.raises(ConfigError, match="install the package that provides"):
        other.resolve("blob")


def test_missing_function_is_a_config_error() -> None:
    """A module without the named opener is a ConfigError, not an AttributeError."""
    table = OpenerTable({"local": "artifactstore.storage.local:open_nothing"})
    with pytest.raises(ConfigError, match="has no open_nothing"):
        table.resolve("local")


async def test_open_backend_dispatches_on_type_and_passes_database_url() -> None:
    """open_backend calls the opener registered for settings.type with the database URL."""
    calls: list[tuple[Any, str | None]] = []

    async def opener(settings: Any, database_url: str | None) -> LocalBackend:
        calls.append((settings, database_url))
        return LocalBackend(settings.name, ROOT)

    settings = PostgresBackendSettings(name="db")
    table = OpenerTable({"postgres": opener})
    backend = await open_backend(settings, database_url="postgresql://x/y", openers=table)
    assert backend.name == "db"
    assert calls == [(settings, "postgresql://x/y")]


async def test_open_backends_closes_what_it_opened_when_one_fails() -> None:
    """If one backend fails to open, those opened before it are closed and the error raised."""
    opened: list[LocalBackend] = []

    async def open_ok(settings: Any, database_url: str | None) -> LocalBackend:
        del database_url
        backend = LocalBackend(settings.name, ROOT)
        opened.append(backend)
        return backend

    async def open_fails(settings: Any, database_url: str | None) -> LocalBackend:
        del database_url
        raise BackendUnavailableError(f"{settings.name} is down")

    storage = StorageSettings(
        default="a",
        backends={
            "a": LocalBackendSettings(name="a", root=ROOT),
            "b": LocalBackendSettings(name="b", root=ROOT),
            "c": S3BackendSettings(name="c", bucket="x"),
        },
    )
    table = OpenerTable({"local": open_ok, "s3": open_fails})
    with pytest.raises(BackendUnavailableError, match="c is down"):
        await open_backends(storage, openers=table)
    assert [b.name for b in opened] == ["a", "b"]
    assert all(b.closed for b in opened)
