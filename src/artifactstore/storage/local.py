"""The ``local`` storage backend: one file per blob under a root directory.

Owns the on-disk layout ``<root>/sha256/<hex[0:2]>/<hex[2:4]>/<hex>`` (from
``spi.object_key``) and atomic writes: bytes go to a temp file named
``.tmp-<uuid>`` in the target's directory, are fsynced, renamed into place
with ``os.replace`` and the directory is fsynced (DESIGN section 4). A crash
leaves at most a ``.tmp-*`` file, which iteration and reads never see.

Content addressing makes a repeated put harmless: the new complete file
replaces the old one atomically, so re-putting a blob also repairs a copy
that was damaged behind the registry's back. Readers that already opened
the old file keep reading it.

Blocking file calls run on worker threads (``asyncio.to_thread``); reads
stream in 1 MiB chunks. This module does not hash: digests are the
registry's job, sizes are checked here. Every ``OSError`` leaves as
``BackendUnavailableError``; absence is ``BlobNotFoundError`` or ``None``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from artifactstore.errors import (
    BackendUnavailableError,
    BlobNotFoundError,
    InsufficientStorageError,
    SizeMismatchError,
    UnavailableError,
    is_disk_full,
)
from artifactstore.resources import AsyncCloseable
from artifactstore.staged_file import DirectReader, StagedFile, fsync_dir, page_cached
from artifactstore.storage.spi import (
    DEFAULT_READ_CHUNK,
    BackendHealth,
    ObjectInfo,
    ObjectStream,
    ResolvedRange,
    digest_from_key,
    object_key,
    resolve_range,
)
from artifactstore.storage.streams import (
    ClosingChunks,
    coalesce,
    exact_size,
    read_direct_range,
    read_file_range,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator

    from artifactstore.config import LocalBackendSettings
    from artifactstore.digests import Digest
    from artifactstore.storage.spi import ByteRange

__all__ = ["TEMP_PREFIX", "LocalBackend", "open_local"]

TEMP_PREFIX = ".tmp-"
# Reads at least this long go around the page cache (DirectReader).
DIRECT_READ_MIN_BYTES = 4 * 1024 * 1024
# Ranges up to this size are read in the same thread hop as the open.
SMALL_READ_BYTES = 256 * 1024
_HEALTH_PREFIX = ".health-"
# Chunks from the caller are gathered to about this size before each write,
# so a stream of tiny chunks does not cost one thread hop per chunk.
_WRITE_BATCH = 4 * DEFAULT_READ_CHUNK
# At or under this size a put_stream is gathered in memory and written in one
# worker-thread hop (each hop costs ~0.1 ms; a small blob needed five).
_SMALL_PUT_BYTES = 1024 * 1024


def _open_for_read(
    path: Path, byte_range: ByteRange | None
) -> tuple[BinaryIO | None, int, ResolvedRange, bytes]:
    """Open, size and resolve in one thread hop; read small ranges right away.

    Returns the open file (None when the range was small and already read),
    the object size, the resolved range and the bytes read (or b"").
    """
    f: BinaryIO = path.open("rb")
    try:
        size = os.fstat(f.fileno()).st_size
        resolved = resolve_range(byte_range, size)
        if resolved.length > SMALL_READ_BYTES:
            return f, size, resolved, b""
        data = os.pread(f.fileno(), resolved.length, resolved.start) if resolved.length else b""
    except BaseException:
        f.close()
        raise
    f.close()
    if len(data) != resolved.length:
        raise SizeMismatchError(
            f"{path.name} ended at {resolved.start + len(data)}, expected {resolved.end}",
            expected=resolved.end,
            received=resolved.start + len(data),
        )
    return None, size, resolved, data


async def _single(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data


PRIVATE_DIR_MODE = 0o700
"""Blobs are readable through the registry only, never by other local users."""


def _makedirs_durable(directory: Path, root: Path) -> None:
    """Create ``directory`` (under ``root``) and fsync each parent whose entries changed."""
    missing: list[Path] = []
    d = directory
    while d != root and not d.is_dir():
        missing.append(d)
        d = d.parent
    for new in reversed(missing):
        with contextlib.suppress(FileExistsError):
            new.mkdir(mode=PRIVATE_DIR_MODE)
        fsync_dir(new.parent)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class LocalBackend(AsyncCloseable):
    """Blobs as files under ``root``; safe for concurrent use by tasks and processes."""

    def __init__(self, name: str, root: Path) -> None:
        self._name = name
        self._root = Path(root).absolute()
        self._closed = False

    @property
    def name(self) -> str:
        """The configured backend name."""
        return self._name

    @property
    def kind(self) -> str:
        """Always ``local``."""
        return "local"

    @property
    def root(self) -> Path:
        """The directory that holds the ``sha256/`` tree."""
        return self._root

    @property
    def closed(self) -> bool:
        """True after ``aclose``."""
        return self._closed

    def __repr__(self) -> str:
        return f"LocalBackend(name={self._name!r}, root={str(self._root)!r})"

    # -- paths -----------------------------------------------------------------

    def path_for(self, sha256: Digest) -> Path:
        """The file that holds (or would hold) the blob; always inside ``root``."""
        key = object_key(sha256)
        # Keys come from validated digests, so this cannot fail; it guards
        # against a future change to the key layout, not against input. A
        # lexical check: ``Path.resolve`` costs an lstat per path component,
        # on the event loop, for every blob written or read.
        if key.startswith("/") or ".." in key.split("/"):
            raise BackendUnavailableError(f"{self._name}: key escapes the root: {key}")
        return self._root / key

    def _unavailable(self, what: str, exc: OSError) -> UnavailableError:
        if is_disk_full(exc):
            return InsufficientStorageError(
                f"local backend {self._name!r}: {what}: no space left on the device",
                backend=self._name,
                errno=exc.errno,
            )
        return BackendUnavailableError(
            f"local backend {self._name!r}: {what}: {exc}",
            backend=self._name,
            errno=exc.errno,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailableError(f"local backend {self._name!r} is closed")

    # -- writes ----------------------------------------------------------------

    def _temp_path(self, target: Path) -> Path:
        return target.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}"

    def _commit(self, tmp: Path, target: Path) -> None:
        """Rename a complete, fsynced temp file into place and make the rename durable."""
        tmp.replace(target)
        fsync_dir(target.parent)

    async def put_stream(
        self, sha256: Digest, chunks: AsyncIterable[bytes], size: int
    ) -> ObjectInfo:
        """Store exactly ``size`` bytes from ``chunks``; atomic and idempotent.

        Raises:
            SizeMismatchError: the stream was shorter or longer; nothing is left behind.
            InsufficientStorageError: the filesystem is full (or the quota used up).
            BackendUnavailableError: the filesystem refused otherwise (permissions, ...).
        """
        self._check_open()
        target = self.path_for(sha256)
        if size <= _SMALL_PUT_BYTES:
            data = b"".join([piece async for piece in exact_size(chunks, size)])
            try:
                await asyncio.to_thread(self._put_bytes_sync, data, target)
            except OSError as exc:
                raise self._unavailable(f"cannot write {sha256}", exc) from exc
            return ObjectInfo(sha256=sha256, size=size, key=object_key(sha256))
        try:
            await asyncio.to_thread(_makedirs_durable, target.parent, self._root)
            tmp = self._temp_path(target)
            # Direct I/O where possible: filling the page cache is the slow
            # part of a write on a VM (staged_file says why).
            out = await asyncio.to_thread(StagedFile, tmp, create=True)
        except OSError as exc:
            raise self._unavailable("cannot create a temp file", exc) from exc
        committed = False
        try:
            try:
                async for piece in coalesce(exact_size(chunks, size), _WRITE_BATCH):
                    await asyncio.to_thread(out.append, piece)
                await asyncio.to_thread(out.sync)
            finally:
                await asyncio.to_thread(out.close)
            await asyncio.to_thread(self._commit, tmp, target)
            committed = True
        except OSError as exc:
            raise self._unavailable(f"cannot write {sha256}", exc) from exc
        finally:
            if not committed:
                # Shielded: a cancelled put must still remove its temp file.
                await asyncio.shield(asyncio.to_thread(_unlink_quietly, tmp))
        return ObjectInfo(sha256=sha256, size=size, key=object_key(sha256))

    def _put_bytes_sync(self, data: bytes, target: Path) -> None:
        """A small blob in one worker-thread hop: temp file, write, fsync, rename, fsync dir."""
        _makedirs_durable(target.parent, self._root)
        tmp = self._temp_path(target)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            self._commit(tmp, target)
        except BaseException:
            _unlink_quietly(tmp)
            raise

    def _put_file_sync(self, path: Path, target: Path, *, consume: bool) -> int:
        _makedirs_durable(target.parent, self._root)
        src_stat = path.stat()
        if consume and src_stat.st_dev == target.parent.stat().st_dev:
            # Same filesystem: take the staged file itself. Its bytes may not
            # have been fsynced by whoever wrote them, so do that first.
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._commit(path, target)
            return src_stat.st_size
        tmp = self._temp_path(target)
        try:
            with path.open("rb") as src, StagedFile(tmp, create=True) as dst:
                while block := src.read(_WRITE_BATCH):
                    dst.append(block)
                dst.sync()
                size = dst.size
            self._commit(tmp, target)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        if consume:
            _unlink_quietly(path)
        return size

    async def put_file(self, sha256: Digest, path: Path, *, consume: bool = False) -> ObjectInfo:
        """Store a staged file; with ``consume`` a same-filesystem file is renamed into place.

        Raises:
            BackendUnavailableError: the file could not be read or the target written.
        """
        self._check_open()
        target = self.path_for(sha256)
        try:
            size = await asyncio.to_thread(self._put_file_sync, Path(path), target, consume=consume)
        except OSError as exc:
            raise self._unavailable(f"cannot store {path} as {sha256}", exc) from exc
        return ObjectInfo(sha256=sha256, size=size, key=object_key(sha256))

    # -- reads -----------------------------------------------------------------

    async def head(self, sha256: Digest) -> ObjectInfo | None:
        """The stored object's info, or None when absent."""
        self._check_open()
        path = self.path_for(sha256)
        try:
            st = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._unavailable(f"cannot stat {sha256}", exc) from exc
        return ObjectInfo(sha256=sha256, size=st.st_size, key=object_key(sha256))

    async def get(self, sha256: Digest, byte_range: ByteRange | None = None) -> ObjectStream:
        """Open a streamed read (1 MiB chunks) of the whole object or a range.

        Raises:
            BlobNotFoundError: no such object (checked before any byte flows).
            InvalidRangeError: the range selects no byte of the object.
        """
        self._check_open()
        path = self.path_for(sha256)
        try:
            f, size, resolved, small = await asyncio.to_thread(_open_for_read, path, byte_range)
        except FileNotFoundError as exc:
            raise BlobNotFoundError(
                f"{sha256} is not stored on backend {self._name!r}", backend=self._name
            ) from exc
        except OSError as exc:
            raise self._unavailable(f"cannot open {sha256}", exc) from exc
        info = ObjectInfo(sha256=sha256, size=size, key=object_key(sha256))
        if f is None:
            # Small objects were read whole in the same thread hop as the open.
            return ObjectStream(info=info, range=resolved, chunks=_single(small))

        reader: DirectReader | None = None
        if resolved.length >= DIRECT_READ_MIN_BYTES and not page_cached(
            f.fileno(), resolved.start, resolved.end
        ):
            # A large cold read goes around the page cache (staged_file.DirectReader
            # says why); a cached one stays buffered, where it runs at memory speed.
            try:
                reader = await asyncio.to_thread(DirectReader, path)
            except OSError:
                reader = None

        async def release() -> None:
            await asyncio.to_thread(f.close)
            if reader is not None:
                await asyncio.to_thread(reader.close)

        source = (
            read_direct_range(reader, resolved.start, resolved.end)
            if reader is not None
            else read_file_range(f, resolved.start, resolved.end)
        )
        return ObjectStream(info=info, range=resolved, chunks=ClosingChunks(source, release))

    # -- delete ----------------------------------------------------------------

    def _delete_sync(self, path: Path) -> bool:
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(path.parent)
        return True

    async def delete(self, sha256: Digest) -> bool:
        """Remove the object; True if a file was removed. Idempotent.

        Empty directories are left alone: a concurrent put may be about to use them.
        """
        self._check_open()
        path = self.path_for(sha256)
        try:
            return await asyncio.to_thread(self._delete_sync, path)
        except OSError as exc:
            raise self._unavailable(f"cannot delete {sha256}", exc) from exc

    # -- inventory ---------------------------------------------------------------

    def _scan_leaf(self, leaf: Path) -> list[ObjectInfo]:
        found = []
        try:
            entries = list(os.scandir(leaf))
        except FileNotFoundError:
            return []
        for entry in entries:
            key = f"{leaf.relative_to(self._root).as_posix()}/{entry.name}"
            digest = digest_from_key(key)
            if digest is None:
                continue  # temp files of unfinished writes, strays
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                size = entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue  # deleted while we walked
            found.append(ObjectInfo(sha256=digest, size=size, key=key))
        found.sort(key=lambda info: info.key)
        return found

    def _subdirs(self, directory: Path) -> list[Path]:
        try:
            return sorted(
                Path(e.path)
                for e in os.scandir(directory)
                if len(e.name) == 2  # noqa: PLR2004 - two hex characters per level
                and e.is_dir(follow_symlinks=False)
            )
        except FileNotFoundError:
            return []

    async def iter_objects(self) -> AsyncIterator[ObjectInfo]:
        """Every complete object, once each, in key order; temp files and strays are skipped."""
        self._check_open()
        base = self._root / "sha256"
        try:
            for first in await asyncio.to_thread(self._subdirs, base):
                for leaf in await asyncio.to_thread(self._subdirs, first):
                    for info in await asyncio.to_thread(self._scan_leaf, leaf):
                        yield info
        except OSError as exc:
            raise self._unavailable("cannot list objects", exc) from exc

    # -- lifecycle ---------------------------------------------------------------

    def _probe(self) -> None:
        if not self._root.is_dir():
            raise FileNotFoundError(errno.ENOENT, "root directory is missing", str(self._root))
        probe = self._root / f"{_HEALTH_PREFIX}{uuid.uuid4().hex}"
        try:
            with probe.open("xb") as f:
                f.write(b"ok")
        finally:  # a full disk refuses the write (or the close) after the file exists
            probe.unlink(missing_ok=True)

    async def health(self) -> BackendHealth:
        """Ok when the root exists and a probe file can be created and removed there."""
        if self._closed:
            return BackendHealth(ok=False, detail="closed")
        try:
            await asyncio.to_thread(self._probe)
        except OSError as exc:
            return BackendHealth(ok=False, detail=f"{self._root}: {exc}")
        return BackendHealth(ok=True, detail=str(self._root))

    async def aclose(self) -> None:
        """Mark the backend closed; it holds no open resources between calls."""
        self._closed = True


async def open_local(
    settings: LocalBackendSettings, database_url: str | None = None
) -> LocalBackend:
    """Open the ``local`` backend: create its root if needed (``database_url`` is unused).

    Raises:
        BackendUnavailableError: the root cannot be created.
    """
    del database_url
    root = Path(settings.root)
    try:
        await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    except OSError as exc:
        raise BackendUnavailableError(
            f"local backend {settings.name!r}: cannot create root {root}: {exc}",
            backend=settings.name,
        ) from exc
    return LocalBackend(settings.name, root)
