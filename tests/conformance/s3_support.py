"""The S3 flavour of the conformance suite, shared by the moto and Ceph test modules.

Owns the endpoint description, a fresh bucket per test, and the raw-storage
hooks, which use a plain synchronous boto3 client (not the adapter) on a
worker thread. The debris of a crashed S3 write is an unfinished multipart
upload with one part, so ``raw_keys`` lists unfinished uploads as well as
objects. Test settings lower the multipart threshold (6 MiB) and part size
(5 MiB, S3's minimum) so the parallel multipart path runs at test sizes.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from tests.conformance.suite import MIB, BackendConformance

from artifactstore.config import S3BackendSettings, SecretRef
from artifactstore.storage.factory import open_backend
from artifactstore.storage.s3 import S3Backend

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

    from artifactstore.digests import Digest
    from artifactstore.storage.spi import StorageBackend

UPLOAD_MARK = "unfinished-upload:"
ACCESS_KEY_VAR = "CONFORMANCE_S3_ACCESS_KEY"


@dataclass(frozen=True, slots=True)
class S3Endpoint:
    """Where a real S3 endpoint listens and the credentials it accepts."""

    url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> S3Endpoint | None:
        """The endpoint named by ``S3_ENDPOINT_URL`` and its keys, or None if unset."""
        url = environ.get("S3_ENDPOINT_URL")
        key = environ.get("S3_ACCESS_KEY_ID")
        secret = environ.get("S3_SECRET_ACCESS_KEY")
        if not (url and key and secret):
            return None
        return cls(url, key, secret, environ.get("S3_REGION") or "us-east-1")

    def raw_client(self) -> S3Client:
        """A plain boto3 client, for setting up and inspecting buckets directly."""
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )


def empty_bucket(client: S3Client, bucket: str) -> None:
    """Abort unfinished uploads, delete every object, then the bucket."""
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
    for listing in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in listing.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})  # type: ignore[typeddict-item]
    client.delete_bucket(Bucket=bucket)


def s3_server_config(
    endpoint: S3Endpoint, bucket: str, **options: int | str
) -> tuple[str, dict[str, str]]:
    """A server's TOML with one s3 backend ``objects`` (the default), and the env its keys need."""
    lines = "".join(
        f"{k} = {v!r}\n" if isinstance(v, str) else f"{k} = {v}\n" for k, v in options.items()
    )
    toml = f"""
[storage]
default = "objects"

[storage.backends.objects]
type = "s3"
endpoint_url = "{endpoint.url}"
region = "{endpoint.region}"
bucket = "{bucket}"
access_key_ref = "env:E2E_S3_ACCESS_KEY"
secret_key_ref = "env:E2E_S3_SECRET_KEY"
{lines}"""
    return toml, {
        "E2E_S3_ACCESS_KEY": endpoint.access_key,
        "E2E_S3_SECRET_KEY": endpoint.secret_key,
    }


def s3_settings(
    endpoint: S3Endpoint, bucket: str, tmp_path: Path, *, key_prefix: str = "", **extra: Any
) -> S3BackendSettings:
    """Test settings: access key by ``env:`` reference, secret by ``file:`` reference."""
    secret_file = tmp_path / f"s3-secret-{uuid.uuid4().hex}"
    secret_file.write_text(endpoint.secret_key + "\n", encoding="utf-8")
    options: dict[str, Any] = {
        "multipart_threshold_bytes": 6 * MIB,
        "multipart_chunk_bytes": 5 * MIB,
        **extra,
    }
    return S3BackendSettings(
        name="s3test",
        bucket=bucket,
        endpoint_url=endpoint.url,
        region=endpoint.region,
        key_prefix=key_prefix,
        access_key_ref=SecretRef(f"env:{ACCESS_KEY_VAR}", "storage.backends.s3test.access_key_ref"),
        secret_key_ref=SecretRef(f"file:{secret_file}", "storage.backends.s3test.secret_key_ref"),
        **options,
    )


def _s3(backend: StorageBackend) -> S3Backend:
    assert isinstance(backend, S3Backend)
    return backend


def conforms(backend: S3Backend) -> StorageBackend:
    """Mypy proves here that S3Backend implements the protocol."""
    return backend


class S3Conformance(BackendConformance):
    """The contract on a fresh bucket per test; subclasses provide ``s3_endpoint``."""

    multipart_size = 12 * MIB + 17  # 3 parts of 5 MiB
    large_size = 40 * MIB + 3  # 9 parts, uploaded 4 at a time
    key_prefix_setting = "conformance/run"

    @pytest.fixture
    def s3_endpoint(self) -> S3Endpoint:
        """The endpoint under test; each test module overrides this."""
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def access_key_env(self, s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
        """The variable the settings' ``env:`` access key reference points at."""
        monkeypatch.setenv(ACCESS_KEY_VAR, s3_endpoint.access_key)

    @pytest.fixture
    async def bucket(self, s3_endpoint: S3Endpoint) -> AsyncIterator[str]:
        """A fresh, empty bucket, removed with its contents afterwards."""
        client = s3_endpoint.raw_client()
        name = f"conformance-{uuid.uuid4().hex[:16]}"
        await asyncio.to_thread(client.create_bucket, Bucket=name)
        try:
            yield name
        finally:
            await asyncio.to_thread(empty_bucket, client, name)
            client.close()

    @pytest.fixture
    async def backend(
        self, s3_endpoint: S3Endpoint, bucket: str, tmp_path: Path
    ) -> AsyncIterator[StorageBackend]:
        """An S3 backend opened through the factory, with a key prefix."""
        settings = s3_settings(s3_endpoint, bucket, tmp_path, key_prefix=self.key_prefix_setting)
        backend = await open_backend(settings)
        yield conforms(_s3(backend))
        await backend.aclose()

    def key_prefix(self, backend: StorageBackend) -> str:
        """The prefix the fixture configured."""
        return _s3(backend).settings.key_prefix

    def _client(self, backend: StorageBackend) -> tuple[S3Client, str]:
        s3 = _s3(backend)
        endpoint = S3Endpoint(
            url=s3.settings.endpoint_url or "",
            access_key=(s3.settings.access_key_ref or SecretRef("", "")).reveal(),
            secret_key=(s3.settings.secret_key_ref or SecretRef("", "")).reveal(),
            region=s3.settings.region,
        )
        return endpoint.raw_client(), s3.settings.bucket

    async def raw_write(self, backend: StorageBackend, key: str, data: bytes) -> None:
        """PUT an object directly."""
        client, bucket = self._client(backend)
        await asyncio.to_thread(client.put_object, Bucket=bucket, Key=key, Body=data)

    async def raw_read(self, backend: StorageBackend, key: str) -> bytes | None:
        """GET an object directly, or None if absent."""
        client, bucket = self._client(backend)

        def read() -> bytes | None:
            try:
                return client.get_object(Bucket=bucket, Key=key)["Body"].read()
            except client.exceptions.NoSuchKey:
                return None

        return await asyncio.to_thread(read)

    async def raw_keys(self, backend: StorageBackend) -> set[str]:
        """Every object key in the bucket, plus one entry per unfinished upload."""
        client, bucket = self._client(backend)

        def keys() -> set[str]:
            found: set[str] = set()
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                found.update(o["Key"] for o in page.get("Contents", []))
            uploads = client.list_multipart_uploads(Bucket=bucket)
            found.update(f"{UPLOAD_MARK}{u['Key']}" for u in uploads.get("Uploads", []))
            return found

        return await asyncio.to_thread(keys)

    async def crash_write(self, backend: StorageBackend, sha256: Digest, data: bytes) -> None:
        """A multipart upload with one part uploaded, never completed nor aborted."""
        client, bucket = self._client(backend)
        key = self.key(backend, sha256)

        def start() -> None:
            upload = client.create_multipart_upload(Bucket=bucket, Key=key)
            client.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=upload["UploadId"],
                PartNumber=1,
                Body=data[: len(data) // 2],
            )

        await asyncio.to_thread(start)

    async def test_crashed_write_leftovers_are_ignored(self, backend: StorageBackend) -> None:
        """An unfinished multipart upload is invisible to head, get and iteration."""
        await super().test_crashed_write_leftovers_are_ignored(backend)
        # The crashed upload is still there; ours completed beside it.
        assert any(k.startswith(UPLOAD_MARK) for k in await self.raw_keys(backend))
