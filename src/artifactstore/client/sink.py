"""Interim VerifiedFile (replaced by wip-download)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from artifactstore import errors
from artifactstore.digests import DualHasher
from artifactstore.staged_file import StagedFile, fsync_dir

if TYPE_CHECKING:
    from collections.abc import Callable

    from artifactstore.digests import Digest


class VerifiedFile:
    """Interim."""

    def __init__(self, target: Path, *, size: int, sha256: Digest, blake3: Digest) -> None:
        fd, name = tempfile.mkstemp(
            prefix=f".{target.name[:40]}.", suffix=".part", dir=target.parent
        )
        mask = os.umask(0o022)
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)
        os.close(fd)
        self.target, self.size, self.sha256, self.blake3 = target, size, sha256, blake3
        self.tmp = Path(name)
        self.out = StagedFile(self.tmp, create=False)
        self.hasher = DualHasher()

    @property
    def written(self) -> int:
        return self.hasher.size

    def write(self, data: bytes) -> None:
        self.hasher.update_stream(data, lambda: self.out.append(data))

    def copy_from_fd(self, fd: int, on_progress: Callable[[int], None]) -> None:
        while data := os.read(fd, 1 << 20):
            self.write(data)
            on_progress(len(data))

    def restart(self) -> None:
        self.hasher.drain()
        self.out.close()
        os.truncate(self.tmp, 0)
        self.out = StagedFile(self.tmp, create=False)
        self.hasher = DualHasher()

    def commit(self) -> None:
        self.hasher.drain()
        got = self.hasher.result()
        if got.size != self.size:
            raise errors.SizeMismatchError(
                f"{self.target.name}: received {got.size} bytes, the manifest says {self.size}; the file was not written"
            )
        for want, have in ((self.sha256, got.sha256), (self.blake3, got.blake3)):
            if not want.matches(have):
                raise errors.DigestMismatchError(
                    f"{self.target.name}: {want.algorithm} is {have.hex}, the manifest says {want.hex}; the file was not written"
                )
        self.out.sync()
        self.out.close()
        self.tmp.replace(self.target)
        fsync_dir(self.target.parent)

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.hasher.drain()
        with contextlib.suppress(OSError):
            self.out.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()
