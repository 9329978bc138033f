"""Blobs and open files handed across the same-host socket (docs/design/0002, ``api.handoff``).

``store_handed`` stores a whole regular file that a client on this machine
passed as a descriptor: its bytes are read with ``pread`` (never ``mmap``: a
file truncated meanwhile must end the read with an error, not a SIGBUS),
hashed with sha256 and blake3 and written to a staged file in one pipeline,
then stored exactly as a finalized upload session is (``store_staged``: same
routing, same dedupe, ``v1.blob.stored`` through the journal). The client
sends no digest: the server computes both from every byte it read.

``open_local`` is the reverse: a read-only descriptor of a readable copy on
a ``local`` backend, for the client to read and verify itself.

The pipeline (``_stage_range``) keeps the jobs on their own threads so
the slowest (sha256, one hash state on one core) sets the pace instead of
their sum: a reader thread ``pread``s the next piece into a ring of reused
page-aligned buffers (``take_buffer``) while this thread feeds blake3, a
lane thread runs sha256 in order, and writer threads send each piece from
the same buffer to the staged file with ``O_DIRECT`` (``PieceWriter``: no
copy into a write buffer, no page cache). A buffer is read into again only
once its sha256 and its write are done. Measured on the 2-core VM: 1 GiB
staged in 0.61-0.69 s where sha256 alone took 0.70 s (docs/PERFORMANCE.md).

It does not speak the socket protocol (``api.handoff_ops``) nor check who
the peer is (``api.handoff``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import stat
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import blake3

from artifactstore.digests import BlobDigests, Digest
from artifactstore.errors import (
    BlobNotFoundError,
    InvalidInputError,
    NotLocalError,
    SizeMismatchError,
    TooLargeError,
    disk_space_checked,
)
from artifactstore.registry.ingest import Expected
from artifactstore.resources import shared_pool
from artifactstore.staged_file import BUFFER_BYTES, PieceWriter, give_back, take_buffer
from artifactstore.storage.local import LocalBackend
from artifactstore.testpoint import pause_at
from artifactstore.views import LocationState

if TYPE_CHECKING:
    from pathlib import Path

    from artifactstore.registry.ingest import Staging
    from artifactstore.registry.records import BlobRecord
    from artifactstore.registry.service import Registry

__all__ = ["PIECE_BYTES", "open_local", "store_handed"]

PIECE_BYTES = BUFFER_BYTES
"""Bytes read, hashed and appended at a time."""
RING = 6
"""Buffers in flight: one being read, one hashed, the others waiting for sha256 or the disk."""


class _StoppedError(Exception):
    """The awaiting task was cancelled; the pipeline stops at the next piece (internal)."""


async def store_handed(
    registry: Registry,
    fd: int,
    length: int,
    *,
    producer: str | None,
    retention_class: str | None,
    actor: str,
) -> tuple[BlobRecord, bool]:
    """Store the whole regular file ``fd`` of ``length`` bytes; ``(blob, created)``.

    ``created`` is False when every routed backend already held the blob:
    the staged bytes are then removed after hashing and nothing is recorded.

    Raises:
        InvalidInputError: ``fd`` is not a regular file.
        TooLargeError: ``length`` exceeds the maximum blob size.
        SizeMismatchError: the file is not ``length`` bytes long, or ended
            early while being read; nothing is stored and nothing stays staged.
    """
    limit = registry.settings.uploads.max_blob_bytes
    if length > limit:
        raise TooLargeError(f"size {length} exceeds the maximum blob size {limit}", limit=limit)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInputError("only regular files can be handed over")
    if info.st_size != length:
        raise SizeMismatchError(
            f"the file has {info.st_size} bytes, the request says {length}",
            expected=length,
            received=info.st_size,
        )
    targets = registry.store.targets(producer=producer, retention_class=retention_class)
    path, digests = await _stage(registry.staging, fd, length)
    await pause_at("handoff:staged")
    return await registry.store_staged(
        path, digests, expected=Expected(size=length), targets=targets, actor=actor
    )


async def open_local(registry: Registry, sha256: Digest) -> tuple[int, BlobRecord]:
    """A read-only descriptor (``O_CLOEXEC``) of a readable local copy, and the blob.

    Verified copies are tried first. A copy whose file is gone or has the
    wrong size is skipped (the client re-hashes what it reads anyway).

    Raises:
        BlobNotFoundError: no readable copy anywhere.
        NotLocalError: readable copies exist, none as a file on a ``local`` backend.
    """
    blob = await registry.find_blob(sha256)
    if blob is None:
        raise BlobNotFoundError(f"no readable copy of {sha256}", sha256=sha256.hex)
    copies = sorted(
        (loc for loc in blob.locations if loc.state in LocationState.READABLE),
        key=lambda loc: (loc.state != LocationState.VERIFIED, loc.backend),
    )
    for loc in copies:
        backend = registry.store.backends.get(loc.backend)
        if isinstance(backend, LocalBackend):
            fd = await asyncio.to_thread(_open_sized, backend.path_for(sha256), blob.size)
            if fd is not None:
                return fd, blob
    raise NotLocalError(
        f"no copy of {sha256} is a local file; read it over HTTP",
        sha256=sha256.hex,
        backends=sorted({loc.backend for loc in copies}),
    )


def _open_sized(path: Path, size: int) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    if os.fstat(fd).st_size != size:
        os.close(fd)
        return None
    return fd


async def _stage(staging: Staging, fd: int, length: int) -> tuple[Path, BlobDigests]:
    """Copy ``fd[0:length]`` to a new staged file, hashing every byte; fsynced.

    The work runs on worker threads; a cancelled caller stops it at the next
    piece and waits for it, so the staged file is removed before this returns.
    """
    target = staging.new_path()  # an ingest's name, tagged with its owner: swept after a crash
    stop = threading.Event()
    work = asyncio.ensure_future(asyncio.to_thread(_stage_sync, target, fd, length, stop))
    try:
        with disk_space_checked("staging"):
            digests = await asyncio.shield(work)
    except asyncio.CancelledError:
        stop.set()
        with contextlib.suppress(BaseException):
            await work
        target.unlink(missing_ok=True)  # the work may have finished meanwhile
        raise
    return target, digests


def _stage_sync(target: Path, fd: int, length: int, stop: threading.Event) -> BlobDigests:
    out = PieceWriter(target)
    try:
        digests = _stage_range(fd, length, out, stop)
        out.sync()
    except BaseException:
        out.close()
        target.unlink(missing_ok=True)
        raise
    out.close()
    return digests


def _stage_range(fd: int, length: int, out: PieceWriter, stop: threading.Event) -> BlobDigests:
    """Read, hash and write ``fd[0:length]`` (see the module docstring for the threads)."""
    sha, b3 = hashlib.sha256(), blake3.blake3()
    count = min(RING, -(-length // PIECE_BYTES))
    maps = [take_buffer() for _ in range(count)]
    bufs = [memoryview(m) for m in maps]
    busy: list[list[Future[None]]] = [[] for _ in bufs]  # sha256 and write of each buffer
    reader, writer = shared_pool("handoff-read", 4), shared_pool("staged-write", 4)
    lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="handoff-sha256")
    reading: Future[int] | None = None
    try:
        pos, i = 0, 0
        if length:
            reading = reader.submit(_read_full, fd, bufs[0][: min(PIECE_BYTES, length)], 0)
        while pos < length:
            assert reading is not None
            got, reading = reading.result(), None
            view = bufs[i][:got]
            nxt, after = (i + 1) % len(bufs), pos + got
            if after < length:
                _settle(busy[nxt])
                want = min(PIECE_BYTES, length - after)
                reading = reader.submit(_read_full, fd, bufs[nxt][:want], after)
            busy[i].append(lane.submit(sha.update, view))
            b3.update(view)
            busy[i].append(writer.submit(out.write_at, view, pos))
            pos, i = after, nxt
            if stop.is_set():
                raise _StoppedError
        for pending in busy:
            _settle(pending)
    finally:
        if reading is not None:
            with contextlib.suppress(BaseException):
                reading.result()
        lane.shutdown(wait=True)
        for pending in busy:
            with contextlib.suppress(BaseException):
                _settle(pending)
        for view in bufs:
            view.release()
        for m in maps:
            give_back(m)
    return BlobDigests(Digest("sha256", sha.digest()), Digest("blake3", b3.digest()), length)


def _settle(pending: list[Future[None]]) -> None:
    """Wait for a buffer's jobs; the first failure is raised."""
    try:
        for job in pending:
            job.result()
    finally:
        pending.clear()


def _read_full(fd: int, into: memoryview, offset: int) -> int:
    """Fill ``into`` from ``offset`` (``pread``); a file that ends first is a size mismatch."""
    got = 0
    while got < len(into):
        n = os.preadv(fd, [into[got:]], offset + got)
        if n == 0:
            raise SizeMismatchError(
                f"the file ended at byte {offset + got} while being read",
                expected=offset + len(into),
                received=offset + got,
            )
        got += n
    return got
