"""``Client``: the library's calls for ordinary (blocking) programs.

Each call runs the ``AsyncClient``'s coroutine on a private event loop in
one background thread, started on first use and stopped by ``close``. A
thread rather than ``asyncio.run`` per call so connections stay pooled
across calls, and so a ``Client`` also works where the caller already runs
an event loop (a notebook, a web handler).
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any, Self, TypeVar

from artifactstore.client.aio import AsyncClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Mapping
    from pathlib import Path

    from artifactstore.client.download import DownloadResult
    from artifactstore.client.progress import ProgressCallback
    from artifactstore.client.publish import UploadOptions, UploadResult
    from artifactstore.client.reader import AsyncFileReader
    from artifactstore.manifest import Manifest
    from artifactstore.models import EventInfo, PackageInfo, VersionInfo

__all__ = ["Client", "FileReader"]

T = TypeVar("T")


class _Loop:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="artifactstore-client", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class FileReader:
    """A read-only binary stream of one file, verified at its end (``AsyncFileReader``)."""

    def __init__(self, reader: AsyncFileReader, loop: _Loop) -> None:
        self._reader = reader
        self._loop = loop
        self.file = reader.file

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes; ``b""`` at the verified end (a mismatch raises there)."""
        return self._loop.run(self._reader.read(size))

    def __iter__(self) -> Iterator[bytes]:
        while block := self.read(1024 * 1024):
            yield block

    def readable(self) -> bool:
        """Always: the stream is for reading."""
        return True

    def close(self) -> None:
        """Close the connection."""
        self._loop.run(self._reader.aclose())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class Client:
    """A registry client; ``with Client() as c:`` (or without ``with``, then ``close``).

    The same arguments, defaults and errors as ``AsyncClient``; every
    method blocks until done.
    """

    def __init__(self, server: str | None = None, token: str | None = None, **options: Any) -> None:
        self._async = AsyncClient(server, token, **options)
        self.endpoint = self._async.endpoint
        self._loop: _Loop | None = None

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            self._loop = _Loop()
        return self._loop.run(coro)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and stop the background loop."""
        if self._loop is not None:
            self._loop.run(self._async.aclose())
            self._loop.stop()
            self._loop = None

    def upload(
        self,
        package: str,
        version: str,
        paths: Iterable[Path],
        *,
        producer: str | None = None,
        retention_class: str | None = None,
        annotations: Mapping[str, str] | None = None,
        options: UploadOptions | None = None,
        progress: ProgressCallback | None = None,
    ) -> UploadResult:
        """See ``AsyncClient.upload``."""
        return self._run(
            self._async.upload(
                package,
                version,
                paths,
                producer=producer,
                retention_class=retention_class,
                annotations=annotations,
                options=options,
                progress=progress,
            )
        )

    def download(self, package: str, version: str, dest: Path, **options: Any) -> DownloadResult:
        """See ``AsyncClient.download`` (same keyword options)."""
        return self._run(self._async.download(package, version, dest, **options))

    def packages(self) -> list[PackageInfo]:
        """See ``AsyncClient.packages``."""
        return self._run(self._async.packages())

    def versions(self, package: str) -> list[VersionInfo]:
        """See ``AsyncClient.versions``."""
        return self._run(self._async.versions(package))

    def version(self, package: str, version: str) -> VersionInfo:
        """See ``AsyncClient.version``."""
        return self._run(self._async.version(package, version))

    def manifest(self, package: str, version: str) -> Manifest:
        """See ``AsyncClient.manifest``."""
        return self._run(self._async.manifest(package, version))

    def open(self, package: str, version: str, path: str) -> FileReader:
        """See ``AsyncClient.open``; use as ``with c.open(...) as f: f.read()``."""
        reader = self._run(self._async.open(package, version, path))
        assert self._loop is not None
        return FileReader(reader, self._loop)

    def yank(self, package: str, version: str, reason: str = "") -> VersionInfo:
        """See ``AsyncClient.yank``."""
        return self._run(self._async.yank(package, version, reason))

    def delete_version(self, package: str, version: str, reason: str = "") -> None:
        """See ``AsyncClient.delete_version``."""
        self._run(self._async.delete_version(package, version, reason))

    def delete(self, package: str, version: str) -> None:
        """See ``AsyncClient.delete``."""
        self._run(self._async.delete(package, version))

    def delete_package(self, package: str, reason: str = "") -> list[str]:
        """See ``AsyncClient.delete_package``."""
        return self._run(self._async.delete_package(package, reason))

    def events(self, after: int = 0, *, follow: bool = False) -> Iterator[EventInfo]:
        """See ``AsyncClient.events``; a blocking iterator."""
        stream: AsyncIterator[EventInfo] = self._async.events(after, follow=follow)

        async def step() -> EventInfo:
            return await anext(stream)

        while True:
            try:
                yield self._run(step())
            except StopAsyncIteration:
                return
