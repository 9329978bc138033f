"""Backend factory: configuration ``type`` -> an opened ``StorageBackend``.

Owns the one lookup table from a backend type (``local``, ``postgres``,
``s3``) to the coroutine that opens it, written as ``"module:function"``
strings and imported only when a backend of that type is opened, so a
deployment without an optional dependency still starts when it does not use
it (the shape of fsspec's ``registry.py``). A missing module becomes a
``ConfigError`` saying what to install; registering a type twice is refused.

Every opener has the signature ``async (settings, database_url) -> backend``;
``database_url`` is the registry database, which the ``postgres`` backend
uses when its own ``url`` is absent and the others ignore. This module does
not read configuration (``config.py`` does) and knows no backend's internals.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import TYPE_CHECKING, Any, TypeAlias

from artifactstore.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from artifactstore.config import BackendSettings, StorageSettings
    from artifactstore.storage.spi import StorageBackend

__all__ = [
    "BUILTIN_OPENERS",
    "Opener",
    "OpenerTable",
    "default_openers",
    "open_backend",
    "open_backends",
    "register_backend_type",
]

Opener: TypeAlias = "Callable[[Any, str | None], Awaitable[StorageBackend]]"

# type -> "module:function". The one place a backend type is wired in.
BUILTIN_OPENERS: Mapping[str, str] = {
    "local": "artifactstore.storage.local:open_local",
    "postgres": "artifactstore.storage.postgres:open_postgres",
    "s3": "artifactstore.storage.s3:open_s3",
}

# What to tell an operator when a backend's module or its dependency is missing.
_INSTALL_HINTS: Mapping[str, str] = {
    "postgres": "install artifactstore with its PostgreSQL dependencies (asyncpg, sqlalchemy)",
    "s3": "install artifactstore with its S3 dependencies (aioboto3)",
}


class OpenerTable:
    """Backend types and their openers; lazy, and refusing duplicate registrations."""

    def __init__(self, openers: Mapping[str, str | Opener] | None = None) -> None:
        self._targets: dict[str, str | Opener] = {}
        for kind, target in (openers or {}).items():
            self.register(kind, target)

    def register(self, kind: str, target: str | Opener) -> None:
        """Add a backend type: an opener or its ``"module:function"`` path.

        Raises:
            ValueError: ``kind`` is already registered, or ``target`` is malformed.
        """
        if kind in self._targets:
            raise ValueError(f"storage backend type {kind!r} is already registered")
        if isinstance(target, str) and target.count(":") != 1:
            raise ValueError(f"opener for {kind!r} must be 'module:function', got {target!r}")
        self._targets[kind] = target

    def kinds(self) -> tuple[str, ...]:
        """The registered types, in registration order."""
        return tuple(self._targets)

    def resolve(self, kind: str) -> Opener:
        """The opener for ``kind``, importing its module now if needed.

        Raises:
            ConfigError: unknown type, or its module (or a dependency) is not installed.
        """
        try:
            target = self._targets[kind]
        except KeyError:
            known = ", ".join(self._targets)
            raise ConfigError(
                f"unknown storage backend type {kind!r} (known: {known})",
                key="storage.backends.type",
            ) from None
        if not isinstance(target, str):
            return target
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            hint = _INSTALL_HINTS.get(kind, f"install the package that provides {module_name}")
            raise ConfigError(
                f"storage backend type {kind!r} is not available: "
                f"module {exc.name or module_name!r} is missing; {hint}",
                key="storage.backends.type",
            ) from exc
        opener: Opener | None = getattr(module, attr, None)
        if opener is None:
            raise ConfigError(
                f"storage backend type {kind!r}: {module_name} has no {attr}",
                key="storage.backends.type",
            )
        return opener


def default_openers() -> OpenerTable:
    """A fresh table holding the built-in types."""
    return OpenerTable(BUILTIN_OPENERS)


_DEFAULT = default_openers()


def register_backend_type(kind: str, target: str | Opener) -> None:
    """Add a backend type to the process-wide table (plug-ins); duplicates raise ValueError."""
    _DEFAULT.register(kind, target)


async def open_backend(
    settings: BackendSettings,
    *,
    database_url: str | None = None,
    openers: OpenerTable | None = None,
) -> StorageBackend:
    """Open one backend chosen by ``settings.type``.

    Raises:
        ConfigError: unknown type, missing module, or unresolvable secrets.
        BackendUnavailableError: the backend could not be opened.
    """
    table = _DEFAULT if openers is None else openers
    opener = table.resolve(settings.type)
    return await opener(settings, database_url)


async def open_backends(
    storage: StorageSettings,
    *,
    database_url: str | None = None,
    openers: OpenerTable | None = None,
) -> dict[str, StorageBackend]:
    """Open every configured backend, keyed by name; all or nothing.

    If one fails to open, those already opened are closed (errors while
    closing are suppressed in favour of the original) and the error is raised.
    """
    opened: dict[str, StorageBackend] = {}
    try:
        for name, settings in storage.backends.items():
            opened[name] = await open_backend(settings, database_url=database_url, openers=openers)
    except BaseException:
        for backend in reversed(list(opened.values())):
            # The open error is the one to report; a failing close must not hide it.
            with contextlib.suppress(Exception):
                await backend.aclose()
        raise
    return opened
