"""The conformance suite against the ``local`` backend, plus what only a filesystem has."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from tests.conformance.suite import MIB, BackendConformance, blob, sha, stream_of

from artifactstore.config import LocalBackendSettings, StorageSettings
from artifactstore.storage.factory import open_backend, open_backends
from artifactstore.storage.local import TEMP_PREFIX, LocalBackend

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from artifactstore.digests import Digest
    from artifactstore.storage.spi import StorageBackend


def _conforms(backend: LocalBackend) -> StorageBackend:
    """Mypy proves here that LocalBackend implements the protocol."""
    return backend


def _local(backend: StorageBackend) -> LocalBackend:
    assert isinstance(backend, LocalBackend)
    return backend


def _page_cached(fd: int, offset: int) -> bool:
    """Whether the page at ``offset`` is in the page cache (an ``RWF_NOWAIT`` read)."""
    try:
        os.preadv(fd, [bytearray(1)], offset, os.RWF_NOWAIT)
    except BlockingIOError:
        return False
    return True


def _direct_reads_work(fd: int) -> bool:
    try:
        direct = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECT)
    except OSError:
        return False
    os.close(direct)
    return True


class TestLocalBackend(BackendConformance):
    """The contract on a fresh root directory per test."""

    large_size = 2 * 1024 * MIB + 200 * MIB + 7  # ~2.2 GiB, generated, hashed on read

    @pytest.fixture
    async def backend(self, tmp_path: Path) -> AsyncIterator[StorageBackend]:
        """A local backend opened through the factory on an empty root."""
        backend = await open_backend(LocalBackendSettings(name="local", root=tmp_path / "blobs"))
        yield _conforms(_local(backend))
        await backend.aclose()

    async def raw_write(self, backend: StorageBackend, key: str, data: bytes) -> None:
        """Write a file under the root directly."""
        path = _local(backend).root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    async def raw_read(self, backend: StorageBackend, key: str) -> bytes | None:
        """Read a file under the root directly."""
        path = _local(backend).root / key
        return path.read_bytes() if path.exists() else None

    async def raw_keys(self, backend: StorageBackend) -> set[str]:
        """Every file under the root, temp files included."""
        root = _local(backend).root
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}

    async def crash_write(self, backend: StorageBackend, sha256: Digest, data: bytes) -> None:
        """A half-written temp file next to where the blob would go."""
        target = _local(backend).path_for(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        (target.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}").write_bytes(data[: len(data) // 2])

    @pytest.mark.slow
    async def test_large_generated_stream(self, backend: StorageBackend) -> None:
        """A ~2.2 GiB generated stream is stored and reads back with the same sha256."""
        await super().test_large_generated_stream(backend)

    async def test_files_follow_the_key_layout(self, backend: StorageBackend) -> None:
        """A blob lives at root/sha256/ab/cd/<hex> and nowhere else."""
        data = blob(10, seed=1)
        digest = await self.put(backend, data)
        h = digest.hex
        assert (_local(backend).root / "sha256" / h[:2] / h[2:4] / h).read_bytes() == data

    async def test_consume_renames_on_the_same_filesystem(
        self, backend: StorageBackend, tmp_path: Path
    ) -> None:
        """put_file(consume=True) on the same filesystem moves the file itself (same inode)."""
        staged = tmp_path / "staged"
        staged.write_bytes(blob(3000, seed=2))
        inode = staged.stat().st_ino
        digest = sha(staged.read_bytes())
        await backend.put_file(digest, staged, consume=True)
        assert not staged.exists()
        assert _local(backend).path_for(digest).stat().st_ino == inode

    async def test_consume_copies_across_filesystems(self, backend: StorageBackend) -> None:
        """put_file(consume=True) from another filesystem copies, then removes the source."""
        other = Path(os.environ.get("CONFORMANCE_OTHER_FS", "/dev/shm"))  # noqa: S108 - a tmpfs
        root = _local(backend).root
        if not other.is_dir() or other.stat().st_dev == root.stat().st_dev:  # noqa: ASYNC240
            pytest.skip(f"no second filesystem at {other}")
        staged = other / f"artifactstore-test-{uuid.uuid4().hex}"
        data = blob(5000, seed=3)
        staged.write_bytes(data)
        try:
            digest = sha(data)
            await backend.put_file(digest, staged, consume=True)
            assert not staged.exists()
            assert _local(backend).path_for(digest).read_bytes() == data
        finally:
            staged.unlink(missing_ok=True)

    async def test_health_fails_without_root(self, backend: StorageBackend) -> None:
        """A backend whose root directory vanished reports unhealthy, with the reason."""
        root = _local(backend).root
        root.rmdir()
        health = await backend.health()
        assert not health.ok
        assert str(root) in health.detail

    async def test_get_keeps_reading_a_deleted_file(self, backend: StorageBackend) -> None:
        """A read opened before a delete still delivers the whole blob."""
        data = blob(2 * MIB, seed=4)
        digest = await self.put(backend, data)
        stream = await backend.get(digest)
        assert await backend.delete(digest)
        assert await self.read(stream) == data

    async def test_rereading_a_cold_blob_stays_out_of_the_page_cache(
        self, backend: StorageBackend
    ) -> None:
        """The cache probe of one read does not make the next read of a cold blob go buffered."""
        if not getattr(os, "RWF_NOWAIT", 0):
            pytest.skip("no RWF_NOWAIT probe here")
        data = blob(32 * MIB, seed=5)
        digest = await self.put(backend, data)
        path = _local(backend).path_for(digest)
        fd = os.open(path, os.O_RDONLY)
        try:
            if not _direct_reads_work(fd):
                pytest.skip("this filesystem refuses O_DIRECT")
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            for _ in range(3):
                assert await self.read(await backend.get(digest)) == data
            # Direct reads leave nothing behind; a buffered one caches every page.
            # Probed backwards: readahead runs forwards, so a probe cannot cache the next one.
            pages = range(len(data) - MIB, -1, -MIB)
            cached = sum(_page_cached(fd, offset) for offset in pages)
        finally:
            os.close(fd)
        assert cached <= 4  # at most the readahead the probes started

    async def test_closed_backend_refuses_work(self, backend: StorageBackend) -> None:
        """After aclose the backend raises BackendUnavailableError and reports unhealthy."""
        from artifactstore.errors import BackendUnavailableError  # noqa: PLC0415

        await backend.aclose()
        with pytest.raises(BackendUnavailableError):
            await backend.put_stream(sha(b"x"), stream_of(b"x"), 1)
        assert not (await backend.health()).ok


async def test_open_backends_opens_every_local_backend(tmp_path: Path) -> None:
    """open_backends returns each configured backend by name, roots created."""
    storage = StorageSettings(
        default="a",
        backends={
            "a": LocalBackendSettings(name="a", root=tmp_path / "a"),
            "b": LocalBackendSettings(name="b", root=tmp_path / "b"),
        },
    )
    backends = await open_backends(storage)
    try:
        assert sorted(backends) == ["a", "b"]
        for b in backends.values():
            assert (await b.health()).ok
        assert (tmp_path / "b").is_dir()
    finally:
        for b in backends.values():
            await b.aclose()
