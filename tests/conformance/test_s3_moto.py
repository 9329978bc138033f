"""The conformance suite against moto's S3 server over HTTP, plus S3-only behaviour."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

import pytest
from tests.conformance.s3_support import S3Conformance, S3Endpoint, s3_settings
from tests.conformance.suite import MIB, blob, sha, stream_of

from artifactstore.errors import BackendUnavailableError, ConfigError
from artifactstore.storage.s3 import MAX_PARTS, S3Backend, part_size_for

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from artifactstore.storage.spi import StorageBackend


class TestS3Moto(S3Conformance):
    """The contract on moto's threaded server, a fresh bucket per test."""

    @pytest.fixture
    def s3_endpoint(self, moto_endpoint: S3Endpoint) -> S3Endpoint:
        """The session's moto server."""
        return moto_endpoint

    async def test_storage_class_and_encryption_are_sent(
        self, s3_endpoint: S3Endpoint, bucket: str, tmp_path: Path
    ) -> None:
        """storage_class and sse reach the endpoint on single and multipart writes."""
        settings = s3_settings(
            s3_endpoint, bucket, tmp_path, storage_class="STANDARD_IA", sse="AES256"
        )
        client = s3_endpoint.raw_client()
        async with await S3Backend.open(settings) as backend:
            for size in (100, 7 * MIB):
                data = blob(size, seed=size)
                info = await backend.put_stream(sha(data), stream_of(data), size)
                head = await asyncio.to_thread(client.head_object, Bucket=bucket, Key=info.key)
                assert head["StorageClass"] == "STANDARD_IA"
                assert head["ServerSideEncryption"] == "AES256"
                assert head["ContentLength"] == size

    async def test_multipart_with_part_checksums(
        self, s3_endpoint: S3Endpoint, bucket: str, tmp_path: Path
    ) -> None:
        """With checksum_parts every part carries its SHA-256 and the upload completes."""
        settings = s3_settings(s3_endpoint, bucket, tmp_path)
        async with await S3Backend.open(settings, checksum_parts=True) as backend:
            data = blob(11 * MIB + 5, seed=21)
            digest = sha(data)
            await backend.put_stream(digest, stream_of(data), len(data))
            assert await (await backend.get(digest)).read_all() == data

    async def test_parts_upload_in_parallel_with_bounded_buffers(
        self, s3_endpoint: S3Endpoint, bucket: str, tmp_path: Path
    ) -> None:
        """Parts upload concurrently, and the stream is read at most a few parts ahead."""
        settings = s3_settings(s3_endpoint, bucket, tmp_path)
        part = settings.multipart_chunk_bytes
        data = blob(7 * part + 3, seed=22)
        consumed = uploaded = in_flight = max_in_flight = max_ahead = 0

        async def watched() -> AsyncIterator[bytes]:
            nonlocal consumed, max_ahead
            async for chunk in stream_of(data, MIB):
                consumed += len(chunk)
                max_ahead = max(max_ahead, consumed - uploaded)
                yield chunk

        async with await S3Backend.open(settings, part_concurrency=2) as backend:
            real_upload_part = backend._client.upload_part

            async def observed_upload_part(**kwargs: Any) -> Any:
                # Observes the real call to moto; nothing is faked.
                nonlocal uploaded, in_flight, max_in_flight
                in_flight += 1
                max_in_flight = max(max_in_flight, in_flight)
                try:
                    return await real_upload_part(**kwargs)
                finally:
                    in_flight -= 1
                    uploaded += len(kwargs["Body"])

            backend._client.upload_part = observed_upload_part  # type: ignore[method-assign]
            digest = sha(data)
            await backend.put_stream(digest, watched(), len(data))
            assert await (await backend.get(digest)).read_all() == data
        assert max_in_flight == 2
        # Two parts in flight plus the one being assembled, never more.
        assert max_ahead <= 3 * part

    async def test_missing_bucket_is_unavailable(
        self, s3_endpoint: S3Endpoint, tmp_path: Path
    ) -> None:
        """A missing bucket: health says why; operations raise BackendUnavailableError."""
        settings = s3_settings(s3_endpoint, "no-such-bucket-here", tmp_path)
        async with await S3Backend.open(settings) as backend:
            health = await backend.health()
            assert not health.ok
            assert "no-such-bucket-here" in health.detail
            with pytest.raises(BackendUnavailableError):
                await backend.put_stream(sha(b"x"), stream_of(b"x"), 1)
            with pytest.raises(BackendUnavailableError):
                [i async for i in backend.iter_objects()]

    async def test_unreachable_endpoint_is_unavailable(self, tmp_path: Path) -> None:
        """Nothing listening: calls raise BackendUnavailableError after retries; unhealthy."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        endpoint = S3Endpoint(f"http://127.0.0.1:{port}", "k", "s")
        settings = s3_settings(endpoint, "bucket", tmp_path)
        async with await S3Backend.open(settings, max_attempts=2) as backend:
            with pytest.raises(BackendUnavailableError):
                await backend.head(sha(b"x"))
            assert not (await backend.health()).ok

    async def test_unset_secret_reference_fails_to_open(
        self, s3_endpoint: S3Endpoint, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A credential reference to an unset variable is a ConfigError naming the key."""
        settings = s3_settings(s3_endpoint, bucket, tmp_path)
        monkeypatch.delenv("CONFORMANCE_S3_ACCESS_KEY")
        with pytest.raises(ConfigError, match="access_key_ref"):
            await S3Backend.open(settings)

    async def test_objects_outside_the_prefix_are_not_listed(self, backend: StorageBackend) -> None:
        """Iteration reads only the configured prefix; another prefix's blobs are invisible."""
        digest = await self.put(backend, b"mine")
        other = sha(b"theirs")
        await self.raw_write(
            backend, f"other/sha256/{other.hex[:2]}/{other.hex[2:4]}/{other.hex}", b"theirs"
        )
        assert [i.sha256 async for i in backend.iter_objects()] == [digest]
        assert await backend.head(other) is None


@pytest.mark.parametrize(
    ("size", "chunk", "expected"),
    [
        (0, 16 * MIB, 16 * MIB),
        (100 * MIB, 5 * MIB, 5 * MIB),
        (5 * MIB * MAX_PARTS, 5 * MIB, 5 * MIB),
        (5 * MIB * MAX_PARTS + 1, 5 * MIB, 6 * MIB),
        (5 * 1024**4, 16 * MIB, 525 * MIB),  # 5 TiB, S3's object limit
        (10, 1, 5 * MIB),
    ],
)
def test_part_size_keeps_parts_within_the_limit(size: int, chunk: int, expected: int) -> None:
    """The part size is the configured one, grown in MiB only when 10,000 parts would not do."""
    part = part_size_for(size, chunk)
    assert part == expected
    assert -(-size // part) <= MAX_PARTS
