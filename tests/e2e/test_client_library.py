"""``artifactstore.client`` against the real server: a program that uses only the library."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from tests.e2e.serverproc import Server, free_port, tree_bytes

from artifactstore import errors
from artifactstore.client import (
    AsyncClient,
    Client,
    FileReader,
    ServerUnreachableError,
    TransferProgress,
    UploadOptions,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.e2e

DOCS = Path(__file__).resolve().parents[2] / "docs" / "CLIENT.md"


def _tree(root: Path) -> Path:
    src = root / "build"
    (src / "lib").mkdir(parents=True)
    (src / "README.txt").write_text("read me\n")
    (src / "lib" / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    (src / "lib" / "copy.txt").write_text("read me\n")
    return src


def _read_to_the_end(stream: FileReader) -> None:
    while stream.read(64 * 1024):
        pass


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.url, server.env["ARTIFACTSTORE_TOKEN"]) as c:
        yield c


@pytest.mark.parametrize("handoff", [True, False], ids=["handoff", "http"])
def test_upload_read_download_and_events(client: Client, tmp_path: Path, handoff: bool) -> None:
    src = _tree(tmp_path / "src")
    seen: list[TransferProgress] = []
    result = client.upload(
        "app",
        "1.0",
        [src],
        producer="ci",
        annotations={"commit": "abc"},
        options=UploadOptions(handoff=handoff, chunk_size=1024 * 1024),
        progress=seen.append,
    )
    assert result.created
    assert result.files == 3
    assert result.uploaded == 2
    assert result.bytes_uploaded == 8 + 3 * 1024 * 1024 + 5
    uploading = [p for p in seen if p.phase == "uploading"]
    assert uploading[-1].done == uploading[-1].total == result.bytes_uploaded

    again = client.upload("app", "1.0", [src], producer="ci", annotations={"commit": "abc"})
    assert not again.created
    assert again.manifest_sha256 == result.manifest_sha256

    big = (src / "lib" / "big.bin").read_bytes()
    with client.open("app", "1.0", "build/lib/big.bin") as stream:
        assert b"".join(stream) == big
    with client.open("app", "1.0", "build/lib/big.bin") as stream:
        assert stream.read(5) == big[:5]
        assert stream.read() == big[5:]
        assert stream.read() == b""

    out = tmp_path / "out"
    done = client.download("app", "1.0", out, handoff=handoff)
    assert done.files == 3
    assert tree_bytes(out) == tree_bytes(tmp_path / "src")

    versions = client.versions("app")
    assert [v.version for v in versions] == ["1.0"]
    assert versions[0].manifest_sha256 == result.manifest_sha256
    assert versions[0].producer == "ci"
    assert [p.name for p in client.packages()] == ["app"]
    manifest = client.manifest("app", "1.0")
    assert manifest.annotations_dict["commit"] == "abc"
    published = [e for e in client.events() if e.type == "v1.package.published"]
    assert published[-1].payload["version"] == "1.0"


async def test_events_follow_sees_a_publish_made_later(server: Server, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("one\n")
    async with AsyncClient(server.url, server.env["ARTIFACTSTORE_TOKEN"]) as client:
        last = 0
        async for event in client.events():
            last = event.seq

        async def first_publish() -> str:
            async for event in client.events(last, follow=True):
                if event.type == "v1.package.published":
                    return str(event.payload["package"])
            return ""

        waiter = asyncio.create_task(first_publish())
        await asyncio.sleep(0.5)  # the stream is open before the publish
        await client.upload("later", "1", [tmp_path / "f.txt"])
        assert await asyncio.wait_for(waiter, 30) == "later"


def test_errors_are_the_artifactstore_classes(
    client: Client, server: Server, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("a\n")
    client.upload("errs", "1", [tmp_path / "a.txt"])
    with pytest.raises(errors.VersionNotFoundError):
        client.version("errs", "2")
    with pytest.raises(errors.PackageNotFoundError):
        client.versions("nope")
    (tmp_path / "a.txt").write_text("changed\n")
    with pytest.raises(errors.VersionConflictError):
        client.upload("errs", "1", [tmp_path / "a.txt"])
    with pytest.raises(errors.FileNotInVersionError):
        client.open("errs", "1", "missing.txt")
    with Client(server.url, "as_wrong-token") as wrong, pytest.raises(errors.UnauthorizedError):
        wrong.upload("errs", "3", [tmp_path / "a.txt"])
    with (
        Client(f"http://127.0.0.1:{free_port()}", "t") as nobody,
        pytest.raises(ServerUnreachableError),
    ):
        nobody.packages()


def test_a_corrupted_blob_fails_the_stream_at_its_end(
    client: Client, server: Server, tmp_path: Path
) -> None:
    payload = os.urandom(300 * 1024)
    (tmp_path / "victim.bin").write_bytes(payload)
    client.upload("corrupt", "1", [tmp_path / "victim.bin"])
    digest = hashlib.sha256(payload).hexdigest()
    (stored,) = (server.data_dir / "blobs").rglob(digest)
    stored.chmod(0o644)
    stored.write_bytes(payload[:1000] + bytes([payload[1000] ^ 0xFF]) + payload[1001:])
    with client.open("corrupt", "1", "victim.bin") as stream:
        first = stream.read(1000)
        assert first == payload[:1000]
        with pytest.raises(errors.DigestMismatchError, match=r"victim\.bin"):
            _read_to_the_end(stream)
    with pytest.raises(errors.DigestMismatchError):
        client.download("corrupt", "1", tmp_path / "out")
    assert not (tmp_path / "out" / "victim.bin").exists()


def test_a_client_without_a_with_block_works_and_closes(server: Server, tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("x\n")
    client = Client(server.url, server.env["ARTIFACTSTORE_TOKEN"])
    client.upload("plain", "1", [tmp_path / "x.txt"])
    assert [v.version for v in client.versions("plain")] == ["1"]
    client.close()


def test_the_docs_example_runs(server: Server, tmp_path: Path) -> None:
    """The CI example of docs/CLIENT.md, run as a program with the server in its environment."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    example = next(b for b in blocks if "# example: ci-publish" in b)
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "app.whl").write_bytes(os.urandom(4096))
    env = {**server.client_env(), "BUILD_ID": "42"}
    run = subprocess.run(
        [sys.executable, "-c", example],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "published app 42" in run.stdout


@pytest.mark.slow
def test_a_cold_large_blob_is_copied_from_the_servers_file(
    client: Client, server: Server, tmp_path: Path
) -> None:
    """Handed over and out of the page cache, it is read around the cache; bytes exact."""
    payload = os.urandom(65 * 1024 * 1024 + 123)
    (tmp_path / "cold.bin").write_bytes(payload)
    client.upload("cold", "1", [tmp_path / "cold.bin"])
    (stored,) = (server.data_dir / "blobs").rglob(hashlib.sha256(payload).hexdigest())
    fd = os.open(stored, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    done = client.download("cold", "1", tmp_path / "out")
    assert done.bytes == len(payload)
    assert (tmp_path / "out" / "cold.bin").read_bytes() == payload
    log = server.log_path.read_text(errors="replace")
    assert re.search(r'"method":"HANDOFF","path":"/v1/blobs/sha256:', log), server.log_tail()
