"""``VerifiedFile``: a download's temporary file, hashed (sha256 and blake3) as it is filled.

A download must run at the disk's pace while both digests see every byte,
and a file whose bytes do not match must never appear under its real name.
The bytes land in a few page-aligned buffers owned here (filled by
``os.preadv`` from a descriptor, a socket's ``recv_into``, or ``write``);
each full buffer goes to three lanes at once (sha256, blake3, the write;
one thread each, in order) while the caller fills the next, so the pace is
the slowest of them, not their sum. Writes go around the page cache
(``O_DIRECT``) where allowed: 1 GiB plus fsync took 0.39-0.44 s here,
buffered 0.44-3.5 s (docs/PERFORMANCE.md). No ``copy_file_range``: the
hashes must read the bytes anyway.

``commit`` checks size and both digests, then fsyncs, renames into place
and fsyncs the directory; a mismatch removes the temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import mmap
import os
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Self

import blake3 as blake3_module

from artifactstore import errors
from artifactstore.digests import Digest
from artifactstore.staged_file import ALIGN, fsync_dir

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["BUFFERS", "BUFFER_BYTES", "BodyEndedError", "VerifiedFile"]

BUFFER_BYTES = 4 * 1024 * 1024
"""Bytes per buffer: one preadv, one hash update per lane, one write."""
BUFFERS = 4
"""Buffers per file: one being filled while the others are hashed and written."""
DIRECT_WRITES = True
"""Write around the page cache where the filesystem allows it (see the module docstring)."""
_O_DIRECT = getattr(os, "O_DIRECT", 0)


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


_UMASK = _read_umask()


class BodyEndedError(ConnectionError):
    """The source ended before the announced number of bytes (retry from ``written``)."""


class VerifiedFile:
    """A temporary file beside ``target``; becomes ``target`` only if size and digests match.

    Not thread-safe: one feeder at a time (the lanes are internal). The
    feeding methods block; an async caller runs them in a worker thread.
    Use as a context manager (or call ``discard`` in a ``finally``) so an
    unfinished file is always removed.
    """

    def __init__(
        self,
        target: Path,
        *,
        size: int,
        sha256: Digest,
        blake3: Digest,
        name: str | None = None,
        direct: bool = DIRECT_WRITES,
    ) -> None:
        """Create the temporary file in ``target``'s directory.

        ``name`` is what messages call the file (the manifest path; default
        the target path). ``direct=False`` forces buffered writes.

        Raises:
            ValueError: negative size, or the digests' algorithms are swapped.
            OSError: the temporary file cannot be created.
        """
        if size < 0:
            raise ValueError(f"size must not be negative, got {size}")
        if sha256.algorithm != "sha256" or blake3.algorithm != "blake3":
            raise ValueError("VerifiedFile needs a sha256 and a blake3 digest")
        self.target = target
        self.size = size
        self.name = str(target) if name is None else name
        self._want = (sha256, blake3)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.name[:40]}.", suffix=".part", dir=target.parent
        )
        self.tmp = Path(tmp)
        self._fd = fd
        self._done = False
        try:
            # mkstemp creates 0600; a finished file gets the mode a plain open() would give it.
            os.fchmod(fd, 0o666 & ~_UMASK)
            self._direct = False
            if direct and _O_DIRECT:
                self._set_direct(on=True)
        except BaseException:
            self.discard()
            raise
        self._bufs = [mmap.mmap(-1, BUFFER_BYTES) for _ in range(BUFFERS)]
        self._views = [memoryview(buf) for buf in self._bufs]
        self._pending: list[list[Future[object]]] = [[] for _ in range(BUFFERS)]
        self._lanes: list[ThreadPoolExecutor] = []
        self._reset()

    def _reset(self) -> None:
        self._sha256 = hashlib.sha256()
        self._blake3 = blake3_module.blake3()
        self._submitted = 0  # bytes handed to the lanes (whole buffers, but the last)
        self._slot = 0  # the buffer being filled
        self._fill = 0  # bytes in it

    @property
    def written(self) -> int:
        """Bytes accepted so far (a resumed transfer asks for the rest from here)."""
        return self._submitted + self._fill

    @property
    def direct(self) -> bool:
        """Whether writes currently go around the page cache."""
        return self._direct

    def _set_direct(self, *, on: bool) -> None:
        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        try:
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags | _O_DIRECT if on else flags & ~_O_DIRECT)
        except OSError as exc:  # the filesystem refuses O_DIRECT (tmpfs, some overlays)
            if exc.errno != errno.EINVAL:
                raise
            on = False
        self._direct = on

    def _check_open(self) -> None:
        if self._done:
            raise RuntimeError(f"{self.name}: the file was already committed or discarded")

    def _lane(self, index: int) -> ThreadPoolExecutor:
        while len(self._lanes) <= index:
            names = ("sha256", "blake3", "write")
            self._lanes.append(
                ThreadPoolExecutor(max_workers=1, thread_name_prefix=names[len(self._lanes)])
            )
        return self._lanes[index]

    def _wait(self, slot: int) -> None:
        """Wait until buffer ``slot`` is hashed and written; raise what a lane raised."""
        pending, self._pending[slot] = self._pending[slot], []
        failure: BaseException | None = None
        for future in pending:
            try:
                future.result()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after all finish
                failure = failure or exc
        if failure is not None:
            raise failure

    def _wait_all(self) -> None:
        for slot in range(BUFFERS):
            self._wait(slot)

    def _submit(self, *, last: bool = False) -> None:
        """Hand the current buffer's bytes to the three lanes and move to the next buffer.

        The ``last`` buffer of a file that never filled one is hashed and
        written right here: no threads for a small file.
        """
        slot, n = self._slot, self._fill
        if n and last and not self._lanes:
            view = self._views[slot][:n]
            self._sha256.update(view)
            self._blake3.update(view)
            self._write_at(view, self._submitted)
            self._submitted += n
        elif n:
            view = self._views[slot][:n]
            offset = self._submitted
            self._pending[slot] = [
                self._lane(0).submit(self._sha256.update, view),
                self._lane(1).submit(self._blake3.update, view),
                self._lane(2).submit(self._write_at, view, offset),
            ]
            self._submitted += n
        self._slot = (slot + 1) % BUFFERS
        self._fill = 0
        self._wait(self._slot)  # the next buffer is free once its last round is done

    def _write_at(self, view: memoryview, offset: int) -> None:
        if self._direct and (offset % ALIGN or len(view) % ALIGN):
            self._set_direct(on=False)  # only the last, partial buffer gets here
        while view:
            try:
                n = os.pwrite(self._fd, view, offset)
            except OSError as exc:
                if exc.errno != errno.EINVAL or not self._direct:
                    raise
                self._set_direct(on=False)  # accepted at open, refused on write
                continue
            view = view[n:]
            offset += n

    def _room(self) -> memoryview:
        """The free part of the current buffer (never empty)."""
        if self._fill == BUFFER_BYTES:
            self._submit()
        return self._views[self._slot][self._fill :]

    def _too_long(self, extra: int) -> errors.SizeMismatchError:
        return errors.SizeMismatchError(
            f"{self.name}: more than the {self.size} bytes expected arrived"
            f" ({self.written + extra} so far); the file was not written",
            path=self.name,
            expected=self.size,
            actual=self.written + extra,
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Add ``data`` (copied into the buffers).

        Raises:
            SizeMismatchError: more than ``size`` bytes in all (nothing of ``data`` is kept).
        """
        self._check_open()
        src = memoryview(data).cast("B")
        if self.written + len(src) > self.size:
            raise self._too_long(len(src))
        while src:
            room = self._room()
            take = min(len(room), len(src))
            room[:take] = src[:take]
            self._fill += take
            src = src[take:]

    def copy_from_fd(self, fd: int, on_progress: Callable[[int], None] | None = None) -> None:
        """Read the whole file behind ``fd`` from offset 0 (``os.preadv``); the sink must be empty.

        Raises:
            SizeMismatchError: the file is longer than ``size`` (a shorter one
                is found by ``commit``).
            OSError: reading failed.
            ValueError: the sink is not empty.
        """
        self._check_open()
        if self.written:
            raise ValueError(f"{self.name}: copy_from_fd needs an empty file (call restart)")
        offset = 0
        while True:
            room = self._room()
            n = os.preadv(fd, [room], offset)
            if not n:
                return
            if offset + n > self.size:
                raise self._too_long(n)
            self._fill += n
            offset += n
            if on_progress is not None:
                on_progress(n)

    def receive(
        self,
        readinto: Callable[[memoryview], int],
        length: int,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """Take exactly ``length`` bytes from ``readinto`` (a socket's ``recv_into``).

        ``readinto(view)`` fills the start of one of this file's buffers and
        returns the count (0: the source ended). Bytes received before a
        failure are kept: ``written`` is where a retry resumes.

        Raises:
            BodyEndedError: ``readinto`` returned 0 before ``length`` bytes.
            SizeMismatchError: ``written + length`` is more than ``size`` (nothing is read).
            Whatever ``readinto`` raises (``OSError``, ``TimeoutError``).
        """
        self._check_open()
        if length < 0:
            raise ValueError(f"length must not be negative, got {length}")
        if self.written + length > self.size:
            raise self._too_long(length)
        left = length
        while left:
            room = self._room()
            want = min(len(room), left)
            got = 0
            try:
                while got < want:
                    n = readinto(room[got:want])
                    if not n:
                        raise BodyEndedError(
                            f"{self.name}: the source ended {left - got} bytes early"
                        )
                    got += n
                    self._fill += n
            finally:
                left -= got
                if got and on_progress is not None:
                    on_progress(got)

    def restart(self) -> None:
        """Forget everything written (the server ignored a Range request)."""
        self._check_open()
        self._wait_all()
        os.ftruncate(self._fd, 0)
        self._reset()

    def _check(self) -> None:
        got = (
            Digest("sha256", self._sha256.digest()),
            Digest("blake3", self._blake3.digest()),
        )
        if self._submitted != self.size:
            raise errors.SizeMismatchError(
                f"{self.name}: received {self._submitted} bytes, the manifest says {self.size};"
                " the file was not written",
                path=self.name,
                expected=self.size,
                actual=self._submitted,
            )
        for want, have in zip(self._want, got, strict=True):
            if not want.matches(have):
                raise errors.DigestMismatchError(
                    f"{self.name}: {want.algorithm} is {have.hex}, the manifest says {want.hex};"
                    " the file was not written",
                    path=self.name,
                    algorithm=want.algorithm,
                    expected=str(want),
                    actual=str(have),
                )

    def commit(self) -> None:
        """Verify, fsync, rename into place, fsync the directory.

        Raises:
            SizeMismatchError: not exactly ``size`` bytes were written.
            DigestMismatchError: a digest differs.
            OSError: writing, syncing or renaming failed.
            In every case the temporary file is removed and the target untouched.
        """
        self._check_open()
        try:
            self._submit(last=True)
            self._wait_all()
            self._check()
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            self.tmp.replace(self.target)
            self._done = True
            fsync_dir(self.target.parent)
        finally:
            self.discard()

    def discard(self) -> None:
        """Stop the lanes, close and remove the temporary file (idempotent; no-op after commit)."""
        pending = getattr(self, "_pending", [])
        for futures in pending:
            for future in futures:
                with contextlib.suppress(BaseException):
                    future.result()
        for lane in getattr(self, "_lanes", []):
            lane.shutdown(wait=True)
        self._lanes = []
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        if not self._done:
            self._done = True
            with contextlib.suppress(OSError):
                self.tmp.unlink()
        for view in getattr(self, "_views", []):
            view.release()
        self._views = []
        for buf in getattr(self, "_bufs", []):
            with contextlib.suppress(BufferError):  # a traceback may still hold a view
                buf.close()
        self._bufs = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.discard()
