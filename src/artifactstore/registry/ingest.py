"""Ingest: bytes in, digests checked, copies stored, ``v1.blob.stored`` recorded.

Every blob passes through a staged file under ``<data_dir>/staging``:
received bytes are written there while both digests are computed, each byte
hashed once (sha256 on a worker thread beside blake3 and the write). Only
when the digests are known - and match what the caller expected - do the
bytes move into the backends, atomically; the local backend takes the staged
file by rename. A mismatch deletes the staged file and records nothing.

Staged files survive a crash; upload sessions resume from them (see
``registry.uploads``). An ingest's staged file is named after the
``Staging`` that made it (``ingest-<owner>-<uuid>``), and each ``Staging``
holds an ``flock`` on ``<staging>-owners/<owner>.lock`` (beside the staging
directory, which stays empty when idle) while it lives: the lock goes
with the process, so ``Staging.sweep_dead_owners`` can remove the files of a
crashed process at once without touching a live one's (docs/design/0006).
Files untouched for a day are removed by age too (``Staging.sweep``).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from artifactstore.digests import BlobDigests, Digest, DualHasher
from artifactstore.errors import (
    DigestMismatchError,
    SizeMismatchError,
    TooLargeError,
    disk_space_checked,
)
from artifactstore.staged_file import StagedFile
from artifactstore.storage.streams import coalesce

if TYPE_CHECKING:
    from collections.abc import AsyncIterable
    from pathlib import Path

__all__ = ["Expected", "Staging", "check_expected", "write_chunk"]

STAGING_PREFIX = "ingest-"
OWNER_SUFFIX = ".lock"
_OWNER_HEX = 16  # characters of an owner token
# Bytes handed to the hashing/writing thread at a time (see storage.streams.coalesce).
INGEST_PIECE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Expected:
    """What the caller claims about the bytes; every given field is checked."""

    sha256: Digest | None = None
    blake3: Digest | None = None
    size: int | None = None


def check_expected(actual: BlobDigests, expected: Expected) -> None:
    """Compare computed digests with the caller's claims.

    Raises:
        SizeMismatchError: the byte count differs.
        DigestMismatchError: a digest differs; ``detail`` has expected and actual.
    """
    if expected.size is not None and expected.size != actual.size:
        raise SizeMismatchError(
            f"expected {expected.size} bytes, received {actual.size}",
            expected=expected.size,
            actual=actual.size,
        )
    for claimed, got in ((expected.sha256, actual.sha256), (expected.blake3, actual.blake3)):
        if claimed is not None and not claimed.matches(got):
            raise DigestMismatchError(
                f"{got.algorithm} mismatch: expected {claimed.hex}, computed {got.hex}",
                algorithm=got.algorithm,
                expected=str(claimed),
                actual=str(got),
            )


def write_chunk(hasher: DualHasher, out: StagedFile, chunk: bytes) -> None:
    """Hash ``chunk`` and append it to ``out`` (run on a worker thread).

    sha256 runs on the hasher's own lane (``DualHasher.update_stream``) while
    blake3 and the write run on this thread: each byte is hashed once by each
    function and written once.
    """
    hasher.update_stream(chunk, lambda: out.append(chunk))


class Staging:
    """The directory of staged bytes: same filesystem as the local backend by default."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.owners = root.with_name(f"{root.name}-owners")
        self.owners.mkdir(exist_ok=True, mode=0o700)
        self.owner = uuid.uuid4().hex[:_OWNER_HEX]
        lock = self.owners / f"{self.owner}{OWNER_SUFFIX}"
        self._owner_fd: int | None = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._owner_fd, fcntl.LOCK_EX)  # a fresh name: nobody else holds it

    def new_path(self, prefix: str = STAGING_PREFIX) -> Path:
        """A fresh, unused path inside the staging directory, tagged with this owner."""
        return self.root / f"{prefix}{self.owner}-{uuid.uuid4().hex}"

    def close(self) -> None:
        """Give up ownership: this owner's files become a dead owner's (swept)."""
        if self._owner_fd is not None:
            (self.owners / f"{self.owner}{OWNER_SUFFIX}").unlink(missing_ok=True)
            os.close(self._owner_fd)
            self._owner_fd = None

    async def stage_stream(
        self, chunks: AsyncIterable[bytes], *, max_size: int
    ) -> tuple[Path, BlobDigests]:
        """Write a stream to a new staged file, hashing as it goes, and fsync it.

        Raises:
            TooLargeError: the stream exceeds ``max_size`` (the file is removed).
            InsufficientStorageError: the staging disk is full (the file is removed).
        """
        target = self.new_path()
        hasher = DualHasher()
        try:
            with disk_space_checked("staging"), StagedFile(target, create=True) as out:
                async for chunk in coalesce(chunks, INGEST_PIECE_BYTES):
                    if hasher.size + len(chunk) > max_size:
                        raise TooLargeError(
                            f"blob exceeds the limit of {max_size} bytes", limit=max_size
                        )
                    await asyncio.to_thread(write_chunk, hasher, out, chunk)
                await asyncio.to_thread(hasher.drain)
                await asyncio.to_thread(out.sync)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return target, hasher.result()

    def sweep(self, *, older_than_seconds: float, prefix: str = STAGING_PREFIX) -> int:
        """Remove staged files untouched for a while; returns how many.

        The age guard keeps a concurrent process's ingest in progress safe. A
        backstop: a crashed owner's files go at once (``sweep_dead_owners``).
        """
        cutoff = time.time() - older_than_seconds
        removed = 0
        for entry in self.root.glob(f"{prefix}*"):
            try:
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def sweep_dead_owners(self, prefix: str = STAGING_PREFIX) -> int:
        """Remove the staged files of owners whose lock nobody holds (crashed); how many.

        A live owner, in this process or another, holds its lock: its files
        stay. A dead owner's lock file goes last, while locked here.
        """
        tagged = self.root.glob(f"{prefix}*-*")
        owners = {p.name.removeprefix(prefix).partition("-")[0] for p in tagged}
        owners |= {p.name.removesuffix(OWNER_SUFFIX) for p in self.owners.glob(f"*{OWNER_SUFFIX}")}
        removed = 0
        for owner in owners - {self.owner}:
            lock = self.owners / f"{owner}{OWNER_SUFFIX}"
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = None  # closed (Staging.close) or never there: nobody owns its files
            try:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                for entry in self.root.glob(f"{prefix}{owner}-*"):
                    entry.unlink(missing_ok=True)
                    removed += 1
                lock.unlink(missing_ok=True)
            except BlockingIOError:
                continue  # alive
            finally:
                if fd is not None:
                    os.close(fd)
        return removed
