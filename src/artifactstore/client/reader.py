"""One file of a version as a read-only stream that fails if its bytes are not the manifest's.

The reader hashes sha256 and blake3 of everything it hands out and checks
both, with the size, when the body ends: the read that reaches the end
raises ``DigestMismatchError`` or ``SizeMismatchError`` instead of
returning the end of the stream, so a consumer that reads to the end never
mistakes bad bytes for a complete file. A consumer that must not act on a
single unverified byte downloads the file instead (``download`` verifies
before the file appears under its name).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Self

import blake3

from artifactstore import errors

if TYPE_CHECKING:
    import contextlib
    from collections.abc import AsyncIterator

    import httpx

    from artifactstore.manifest import ManifestFile

__all__ = ["AsyncFileReader"]


class AsyncFileReader:
    """``await reader.read(n)`` bytes of one manifest file; verified at the end."""

    def __init__(
        self,
        file: ManifestFile,
        opened: contextlib.AbstractAsyncContextManager[httpx.Response],
    ) -> None:
        self.file = file
        self._opened = opened
        self._chunks: AsyncIterator[bytes] | None = None
        self._buffer = bytearray()
        self._sha256 = hashlib.sha256()
        self._blake3 = blake3.blake3()
        self._seen = 0
        self._done = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        block = await self.read(1024 * 1024)
        if not block:
            raise StopAsyncIteration
        return block

    async def _next_chunk(self) -> bytes:
        if self._chunks is None:
            response = await self._opened.__aenter__()
            self._chunks = response.aiter_raw(256 * 1024)
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            self._finish()
            return b""
        self._seen += len(chunk)
        if self._seen > self.file.size:
            raise errors.SizeMismatchError(
                f"{self.file.path}: the server sent more than {self.file.size} bytes",
                path=self.file.path,
            )
        self._sha256.update(chunk)
        self._blake3.update(chunk)
        return chunk

    def _finish(self) -> None:
        """Check size and both digests; raise instead of reporting the end."""
        self._done = True
        if self._seen != self.file.size:
            raise errors.SizeMismatchError(
                f"{self.file.path}: received {self._seen} bytes, the manifest says"
                f" {self.file.size}",
                path=self.file.path,
                expected=self.file.size,
                actual=self._seen,
            )
        for want, have in (
            (self.file.sha256, self._sha256.digest()),
            (self.file.blake3, self._blake3.digest()),
        ):
            if want.raw != have:
                raise errors.DigestMismatchError(
                    f"{self.file.path}: {want.algorithm} is {have.hex()}, the manifest says"
                    f" {want.hex}",
                    path=self.file.path,
                    algorithm=want.algorithm,
                    expected=str(want),
                    actual=f"{want.algorithm}:{have.hex()}",
                )

    async def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all the rest when negative); ``b""`` at the verified end.

        Raises:
            DigestMismatchError, SizeMismatchError: at the end, when the bytes
                were not the manifest's.
        """
        while not self._done and (size < 0 or len(self._buffer) < size):
            chunk = await self._next_chunk()
            if not chunk:
                break
            self._buffer += chunk  # amortised: a bytearray grows in place
        if size < 0:
            size = len(self._buffer)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def aclose(self) -> None:
        """Close the connection (reading stops; nothing is verified)."""
        if self._chunks is not None:
            self._chunks = None
            await self._opened.__aexit__(None, None, None)
