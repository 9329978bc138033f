"""``AsyncClient``: the library's calls for asyncio programs (DESIGN section 14)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote

from artifactstore import errors
from artifactstore.client.download import DownloadResult, download_version, fetch_manifest
from artifactstore.client.endpoint import DEFAULT_RETRY_SECONDS, resolve_endpoint
from artifactstore.client.publish import UploadOptions, UploadResult, upload_version
from artifactstore.client.reader import AsyncFileReader
from artifactstore.client.session_cache import SessionCache
from artifactstore.client.transport import (
    RETRY_FIRST_DELAY,
    RETRY_MAX_DELAY,
    Transport,
    version_path,
)
from artifactstore.client.transport import is_retryable as _retryable
from artifactstore.models import EventInfo, PackageInfo, VersionInfo

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Mapping
    from pathlib import Path

    from artifactstore.client.endpoint import Endpoint
    from artifactstore.client.progress import ProgressCallback
    from artifactstore.manifest import Manifest

__all__ = ["AsyncClient"]

log = logging.getLogger("artifactstore.client")

PAGE = 1000
_STREAM_READ_TIMEOUT = 60.0  # the server sends a keepalive every 15 s


class AsyncClient:
    """A registry client for asyncio programs; ``async with AsyncClient() as c:``.

    ``server`` and ``token`` default as for the CLI: ``ARTIFACTSTORE_SERVER``
    and ``ARTIFACTSTORE_TOKEN``, and on loopback the server's admin-token
    file. Errors are the ``artifactstore.errors`` classes (a server that
    cannot be reached: ``ServerUnreachableError``, an ``UnavailableError``).
    """

    def __init__(
        self,
        server: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        proxy: str | None = None,
        ca_bundle: str | None = None,
        trust_env: bool = True,
        max_connections: int = 16,
        endpoint: Endpoint | None = None,
    ) -> None:
        self.endpoint = endpoint or resolve_endpoint(
            server,
            token,
            timeout=timeout,
            connect_timeout=connect_timeout,
            retry_seconds=retry_seconds,
            proxy=proxy,
            ca_bundle=ca_bundle,
            trust_env=trust_env,
        )
        self.transport = Transport(self.endpoint, max_connections=max_connections)
        self.sessions = SessionCache()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self.transport.aclose()

    async def upload(
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
        """Publish files and directories (recursive) as ``package`` ``version``.

        Re-running an upload that succeeded is a no-op (``created`` False).

        Raises:
            VersionConflictError: the version exists with other content.
            InvalidInputError: a path cannot be published (special file,
                symlink out of its tree, invalid name).
        """
        labels = {
            key: value
            for key, value in (("producer", producer), ("retention_class", retention_class))
            if value
        }
        return await upload_version(
            self.transport,
            package,
            version,
            list(paths),
            labels=labels,
            annotations=dict(annotations or {}),
            options=options or UploadOptions(),
            progress=progress,
            cache=self.sessions,
        )

    async def download(
        self,
        package: str,
        version: str,
        dest: Path,
        *,
        concurrency: int = 4,
        expect_manifest: str | None = None,
        handoff: bool = True,
        progress: ProgressCallback | None = None,
    ) -> DownloadResult:
        """Write every file of the version under ``dest``, each verified before it appears.

        Raises:
            IntegrityError: bytes or manifest did not match their digests
                (no bad file is left under its name).
        """
        return await download_version(
            self.transport,
            package,
            version,
            dest,
            concurrency=concurrency,
            expect_manifest=expect_manifest,
            handoff=handoff,
            progress=progress,
        )

    async def packages(self) -> list[PackageInfo]:
        """Every package, by name."""
        return [PackageInfo.from_json(p) for p in await self._all("/v1/packages", "items")]

    async def versions(self, package: str) -> list[VersionInfo]:
        """Every version of ``package``, newest first."""
        path = f"/v1/packages/{quote(package, safe='')}"
        return [VersionInfo.from_json(v) for v in await self._all(path, "versions")]

    async def version(self, package: str, version: str) -> VersionInfo:
        """One version's summary."""
        return VersionInfo.from_json(
            await self.transport.json("GET", version_path(package, version))
        )

    async def manifest(self, package: str, version: str) -> Manifest:
        """The version's manifest, checked against the digest the server names."""
        manifest, _ = await fetch_manifest(self.transport, package, version)
        return manifest

    async def open(self, package: str, version: str, path: str) -> AsyncFileReader:
        """One file of the version as a stream, verified against the manifest at its end.

        Raises:
            FileNotInVersionError: the version has no such file.
        """
        manifest = await self.manifest(package, version)
        file = manifest.find_file(path)
        if file is None:
            raise errors.FileNotInVersionError(
                f"{package} {version} has no file {path!r}", path=path
            )
        return AsyncFileReader(file, self.transport.stream("GET", f"/v1/blobs/{file.sha256}"))

    async def yank(self, package: str, version: str, reason: str = "") -> VersionInfo:
        """Mark the version yanked (it stays downloadable; listings say so)."""
        path = f"{version_path(package, version)}/yank"
        return VersionInfo.from_json(
            await self.transport.json("POST", path, json={"reason": reason})
        )

    async def delete_version(self, package: str, version: str, reason: str = "") -> None:
        """Delete the version (admin; DESIGN section 11): gone from listings, name never reused.

        Its blobs stay until garbage collection. Raises ``VersionNotFoundError``
        when there is no such version (or it was deleted already).
        """
        path = version_path(package, version)
        await self.transport.request("DELETE", path, json={"reason": reason})

    async def delete(self, package: str, version: str) -> None:
        """``delete_version`` without a reason (the name of 0.x clients)."""
        await self.delete_version(package, version)

    async def delete_package(self, package: str, reason: str = "") -> list[str]:
        """Delete every version of the package (admin) in one transaction; return them."""
        path = f"/v1/packages/{quote(package, safe='')}"
        doc = await self.transport.json("DELETE", path, json={"reason": reason})
        return [str(v) for v in doc["deleted"]]

    async def events(self, after: int = 0, *, follow: bool = False) -> AsyncIterator[EventInfo]:
        """Events after seq ``after`` in order; with ``follow``, keep waiting for new ones.

        Following reconnects after the last event seen when the stream breaks.
        """
        position = after
        while True:
            page = await self.transport.json(
                "GET", "/v1/events", params={"after": position, "limit": PAGE}
            )
            items = _items(page, "items")
            for item in items:
                event = EventInfo.from_json(item)
                position = event.seq
                yield event
            if len(items) < PAGE:
                break
        if not follow:
            return
        delay = RETRY_FIRST_DELAY
        while True:
            try:
                async for event in self._stream(position):
                    position = event.seq
                    delay = RETRY_FIRST_DELAY
                    yield event
            except errors.ArtifactStoreError as exc:
                if not _retryable(exc):
                    raise
                log.warning("event stream: %s; reconnecting in %.1fs", exc.message, delay)
            await asyncio.sleep(delay)
            delay = min(RETRY_MAX_DELAY, delay * 2)

    async def _stream(self, after: int) -> AsyncIterator[EventInfo]:
        import httpx  # noqa: PLC0415 - loaded already by the transport

        async with self.transport.stream(
            "GET",
            "/v1/events/stream",
            params={"after": after},
            headers={"Accept": "text/event-stream"},
            timeout=httpx.Timeout(self.endpoint.connect_timeout, read=_STREAM_READ_TIMEOUT),
        ) as response:
            data: list[str] = []
            async for raw in response.aiter_lines():
                line = raw.rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif not line and data:
                    event = EventInfo.from_json(json.loads("\n".join(data)))
                    data = []
                    if event.seq > after:
                        yield event

    async def _all(self, path: str, key: str) -> list[Any]:
        """Every item of a paged listing."""
        items: list[Any] = []
        cursor: str | None = None
        while True:
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = await self.transport.json("GET", path, params=params)
            items.extend(_items(page, key))
            cursor = page.get("next_cursor")
            if not cursor:
                return items


def _items(page: Any, key: str) -> list[Any]:
    """The list under ``key`` of a paged answer; ``IntegrityError`` for another shape."""
    items = page.get(key) if isinstance(page, dict) else None
    if not isinstance(items, list):
        raise errors.IntegrityError(f"the server's answer has no {key!r} list")
    return items
