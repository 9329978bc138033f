"""The blob store: configured backends, routing, and reads that fall back across copies.

Routing (DESIGN section 7): ``[[storage.routes]]`` are tried in order; the
first whose ``retention_class`` and ``producer`` (a glob) match names the
backends a blob must be stored on; no match means ``storage.default``.
Reads use the ``storage_locations`` view (``queries.readable_backends``):
readable copies (``stored``, ``verified``) on configured backends in a stable
order, verified first; a copy that fails to open is skipped for the next.
Failed, missing and deleted copies are never read.
"""

from __future__ import annotations

import asyncio
import fnmatch
from typing import TYPE_CHECKING

from artifactstore.digests import DualHasher
from artifactstore.errors import (
    BackendUnavailableError,
    BlobNotFoundError,
    ConfigError,
    DigestMismatchError,
)
from artifactstore.registry import queries
from artifactstore.storage.spi import BackendHealth

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from artifactstore.config import StorageSettings
    from artifactstore.digests import BlobDigests, Digest
    from artifactstore.storage.spi import (
        ByteRange,
        ObjectInfo,
        ObjectStream,
        StorageBackend,
    )

__all__ = ["BlobStore"]


class BlobStore:
    """Every configured backend behind one object; knows nothing of packages."""

    def __init__(
        self,
        engine: AsyncEngine,
        backends: Mapping[str, StorageBackend],
        storage: StorageSettings,
    ) -> None:
        missing = {storage.default, *(b for r in storage.routes for b in r.backends)} - set(
            backends
        )
        if missing:
            raise ConfigError(f"storage: backends not opened: {sorted(missing)}")
        self.engine = engine
        self.backends = dict(backends)
        self.settings = storage

    def backend(self, name: str) -> StorageBackend:
        """The backend called ``name``.

        Raises:
            ConfigError: no such backend is configured.
        """
        try:
            return self.backends[name]
        except KeyError:
            raise ConfigError(
                f"no storage backend named {name!r}", key="storage.backends"
            ) from None

    def targets(self, *, producer: str | None, retention_class: str | None) -> tuple[str, ...]:
        """The backends a new blob goes to: the first matching route's, else the default."""
        for route in self.settings.routes:
            if route.retention_class is not None and route.retention_class != retention_class:
                continue
            if route.producer is not None and (
                producer is None or not fnmatch.fnmatchcase(producer, route.producer)
            ):
                continue
            return route.backends
        return (self.settings.default,)

    async def readable_backends(self, conn: AsyncConnection, sha256: Digest) -> list[str]:
        """Backends holding a readable copy, verified copies first, then by name."""
        return [b for b in await queries.readable_backends(conn, sha256) if b in self.backends]

    async def open(self, sha256: Digest, byte_range: ByteRange | None = None) -> ObjectStream:
        """Open a read of the blob from the first copy that opens.

        Raises:
            BlobNotFoundError: no readable copy is recorded.
            InvalidRangeError: the range selects nothing (from the first copy tried).
            BackendUnavailableError: copies are recorded but none could be opened.
        """
        async with self.engine.connect() as conn:
            names = await self.readable_backends(conn, sha256)
        if not names:
            raise BlobNotFoundError(f"no readable copy of {sha256}", sha256=sha256.hex)
        last_error: Exception | None = None
        for name in names:
            try:
                return await self.backends[name].get(sha256, byte_range)
            except (BlobNotFoundError, BackendUnavailableError) as exc:
                last_error = exc
        raise BackendUnavailableError(
            f"no copy of {sha256} could be read (tried {', '.join(names)})",
            sha256=sha256.hex,
            backends=names,
        ) from last_error

    async def copy(
        self, sha256: Digest, expected: BlobDigests, source: str, target: str
    ) -> ObjectInfo:
        """Stream a copy from ``source`` to ``target``, re-hashing on the way.

        The bytes are checked against ``expected`` before the target's write
        completes: a mismatch raises inside the stream, so the target stores
        nothing (backends write atomically).

        Raises:
            DigestMismatchError: the source copy is corrupt.
        """
        stream = await self.backend(source).get(sha256)

        async def checked() -> AsyncIterator[bytes]:
            hasher = DualHasher()
            try:
                async for chunk in stream.chunks:
                    hasher.update(chunk)
                    yield chunk
            finally:
                await stream.aclose()
            got = hasher.result()
            if got != expected:
                raise DigestMismatchError(
                    f"copy of {sha256} on {source} does not match its digests",
                    backend=source,
                    sha256=sha256.hex,
                )

        return await self.backend(target).put_stream(sha256, checked(), expected.size)

    async def health(self, *, within: float | None = None) -> dict[str, BackendHealth]:
        """Each backend's health, by name, asked of all at once.

        With ``within`` (seconds), a backend that has not answered within it is
        reported unhealthy ("no answer within N s"), so one stalled endpoint
        neither delays the others' answers nor the caller's beyond ``within``.
        """

        async def probe(backend: StorageBackend) -> BackendHealth:
            try:
                return await asyncio.wait_for(backend.health(), within)
            except TimeoutError:
                return BackendHealth(ok=False, detail=f"no answer within {within:g} s")

        names = list(self.backends)
        answers = await asyncio.gather(*(probe(self.backends[n]) for n in names))
        return dict(zip(names, answers, strict=True))

    async def aclose(self) -> None:
        """Close every backend."""
        for backend in self.backends.values():
            await backend.aclose()
