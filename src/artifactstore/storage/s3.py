"""The ``s3`` storage backend: one object per blob in a bucket of any S3 endpoint.

Owns everything S3: the aioboto3 client and its botocore configuration, the
key layout ``<key_prefix>/sha256/<hex[0:2]>/<hex[2:4]>/<hex>`` (from
``spi.object_key``), single PUT below ``multipart_threshold_bytes`` and a
parallel, bounded-memory multipart upload above it, ranged GETs passed to
the endpoint, listing through ``ListObjectsV2``, and translating every
botocore/aiohttp failure into our errors at this boundary. Nothing S3 leaves
this module: callers see ``StorageBackend`` and ``artifactstore.errors``.

Writes are atomic the S3 way (DESIGN section 4): an object appears only when
its single PUT or ``CompleteMultipartUpload`` succeeds; a multipart upload
that fails, is cancelled or delivers the wrong number of bytes is aborted.
Targets: Ceph RGW (16.2 tested), MinIO, AWS S3, moto. The choices of client,
retry mode and checksum settings are recorded in
``docs/design/0001-s3-client.md``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
import uuid
from typing import TYPE_CHECKING, Any, NoReturn, Self

import aioboto3
import aiohttp
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from artifactstore.errors import (
    BackendUnavailableError,
    BlobNotFoundError,
    DigestMismatchError,
    InvalidRangeError,
)
from artifactstore.resources import AsyncCloseable
from artifactstore.storage.spi import (
    DEFAULT_READ_CHUNK,
    BackendHealth,
    ObjectInfo,
    ObjectStream,
    OffsetByteRange,
    ResolvedRange,
    SliceByteRange,
    SuffixByteRange,
    digest_from_key,
    object_key,
    resolve_range,
)
from artifactstore.storage.streams import ClosingChunks, exact_size, iter_file, rechunk

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
    from pathlib import Path

    from types_aiobotocore_s3 import S3Client

    from artifactstore.config import S3BackendSettings
    from artifactstore.digests import Digest
    from artifactstore.storage.spi import ByteRange

__all__ = [
    "DEFAULT_PART_CONCURRENCY",
    "MAX_PARTS",
    "S3Backend",
    "open_s3",
    "part_size_for",
]

MAX_PARTS = 10_000  # S3's limit on parts per multipart upload
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum for every part but the last
DEFAULT_PART_CONCURRENCY = 4
HEALTH_DIR = ".health"
_MIB = 1024 * 1024
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})
_BAD_RANGE = frozenset({"InvalidRange", "416"})
_BAD_DIGEST = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"})
# Transport failures while a response body streams (botocore's retries cover
# the request itself, not a body that breaks halfway).
_STREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, BotoCoreError)


def part_size_for(size: int, chunk_bytes: int) -> int:
    """The multipart part size for a ``size``-byte object: ``chunk_bytes``, grown if needed.

    Grown in whole MiB so the upload needs at most ``MAX_PARTS`` parts; never
    below S3's 5 MiB minimum.
    """
    part = max(chunk_bytes, MIN_PART_SIZE)
    if -(-size // part) > MAX_PARTS:
        needed = -(-size // MAX_PARTS)
        part = -(-needed // _MIB) * _MIB
    return part


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _range_header(byte_range: ByteRange | None) -> str | None:
    match byte_range:
        case None:
            return None
        case SliceByteRange(start, end):
            return f"bytes={start}-{end - 1}"
        case OffsetByteRange(offset):
            return f"bytes={offset}-"
        case SuffixByteRange(suffix):
            return f"bytes=-{suffix}"


def _first_failed(tasks: list[asyncio.Task[None]]) -> asyncio.Task[None] | None:
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            return task
    return None


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Backend(AsyncCloseable):
    """Blobs as objects in one bucket; every method is safe to call concurrently.

    Open with ``await S3Backend.open(settings)`` (or ``open_s3``) and close
    with ``aclose`` or ``async with``.
    """

    def __init__(
        self,
        settings: S3BackendSettings,
        client: S3Client,
        stack: contextlib.AsyncExitStack,
        *,
        part_concurrency: int = DEFAULT_PART_CONCURRENCY,
        checksum_parts: bool = False,
    ) -> None:
        self._settings = settings
        self._client = client
        self._stack = stack
        self._prefix = settings.key_prefix.strip("/")
        self._part_concurrency = max(1, part_concurrency)
        self._checksum_parts = checksum_parts
        self._closed = False

    @classmethod
    async def open(
        cls,
        settings: S3BackendSettings,
        *,
        max_attempts: int | None = None,
        part_concurrency: int = DEFAULT_PART_CONCURRENCY,
        checksum_parts: bool = False,
    ) -> Self:
        """Create the client: credentials from the secret refs, else the default chain.

        ``checksum_parts`` also sends a SHA-256 checksum with every multipart
        part (one extra hash pass over the bytes; see the design note).
        Nothing is contacted yet; ``health`` does that. Every call is bounded:
        ``connect_timeout_seconds`` and ``read_timeout_seconds`` per attempt,
        ``max_attempts`` attempts (``max_attempts`` here overrides the
        setting), so a stalled endpoint costs a caller at most about
        ``max_attempts * (connect + read)`` seconds, then a
        ``BackendUnavailableError``.

        Raises:
            ConfigError: a credential reference cannot be resolved.
        """
        access_key = secret_key = None
        if settings.access_key_ref is not None and settings.secret_key_ref is not None:
            access_key = settings.access_key_ref.reveal()
            secret_key = settings.secret_key_ref.reveal()
        config = AioConfig(
            region_name=settings.region,
            retries={"mode": "standard", "max_attempts": max_attempts or settings.max_attempts},
            # botocore >= 1.36 would otherwise add CRC32 checksums to every
            # upload, as aws-chunked trailers over TLS, which many S3-compatible
            # servers (older Ceph RGW, some MinIO) reject. We send the one
            # checksum we choose, explicitly (docs/design/0001-s3-client.md).
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # Explicit endpoints are usually IPs or hosts without wildcard
            # DNS: bucket in the path, not the host name.
            s3={"addressing_style": "path" if settings.endpoint_url else "auto"},
            max_pool_connections=max(10, 2 * part_concurrency),
            connect_timeout=settings.connect_timeout_seconds,
            read_timeout=settings.read_timeout_seconds,
        )
        session = aioboto3.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key)
        stack = contextlib.AsyncExitStack()
        try:
            client = await stack.enter_async_context(
                session.client("s3", endpoint_url=settings.endpoint_url, config=config)
            )
        except BotoCoreError as exc:
            await stack.aclose()
            raise BackendUnavailableError(
                f"s3 backend {settings.name!r}: cannot create a client: {exc}",
                backend=settings.name,
            ) from exc
        return cls(
            settings,
            client,
            stack,
            part_concurrency=part_concurrency,
            checksum_parts=checksum_parts,
        )

    @property
    def name(self) -> str:
        """The configured backend name."""
        return self._settings.name

    @property
    def kind(self) -> str:
        """Always ``s3``."""
        return "s3"

    @property
    def settings(self) -> S3BackendSettings:
        """The settings this backend was opened with."""
        return self._settings

    def __repr__(self) -> str:
        s = self._settings
        return f"S3Backend(name={s.name!r}, endpoint={s.endpoint_url!r}, bucket={s.bucket!r})"

    def key_for(self, sha256: Digest) -> str:
        """The object key of a blob, under the configured prefix."""
        return object_key(sha256, self._prefix)

    # -- error translation -----------------------------------------------------

    def _fail(self, what: str, exc: BaseException) -> NoReturn:
        """Raise ``exc`` as one of our errors (the single translation point)."""
        name = self._settings.name
        if isinstance(exc, ClientError):
            code = _error_code(exc)
            if code in _BAD_DIGEST:
                raise DigestMismatchError(
                    f"s3 backend {name!r}: {what}: the endpoint refused the bytes ({code})",
                    backend=name,
                ) from exc
            raise BackendUnavailableError(
                f"s3 backend {name!r}: {what}: {code or 'error'}: {exc}", backend=name
            ) from exc
        raise BackendUnavailableError(
            f"s3 backend {name!r}: {what}: {type(exc).__name__}: {exc}", backend=name
        ) from exc

    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailableError(f"s3 backend {self._settings.name!r} is closed")

    def _put_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self._settings.storage_class:
            args["StorageClass"] = self._settings.storage_class
        if self._settings.sse:
            args["ServerSideEncryption"] = self._settings.sse
        return args

    # -- writes ----------------------------------------------------------------

    async def put_stream(
        self, sha256: Digest, chunks: AsyncIterable[bytes], size: int
    ) -> ObjectInfo:
        """Store exactly ``size`` bytes from ``chunks``; atomic and idempotent.

        Below the threshold: one PUT carrying the blob's own SHA-256 as its
        checksum (free: we already know it). Above: a multipart upload of
        ``part_size_for`` parts, ``part_concurrency`` at a time, so at most
        that many parts are in memory.

        Raises:
            SizeMismatchError: the stream was shorter or longer; nothing is stored.
            DigestMismatchError: the endpoint computed a different SHA-256.
            BackendUnavailableError: the endpoint failed after retries.
        """
        self._check_open()
        key = self.key_for(sha256)
        checked = exact_size(chunks, size)
        if size < self._settings.multipart_threshold_bytes:
            await self._put_single(sha256, key, checked)
        else:
            await self._put_multipart(key, checked, size)
        return ObjectInfo(sha256=sha256, size=size, key=key)

    async def _put_single(self, sha256: Digest, key: str, chunks: AsyncIterator[bytes]) -> None:
        body = b"".join([chunk async for chunk in chunks])
        try:
            await self._client.put_object(
                Bucket=self._settings.bucket,
                Key=key,
                Body=body,
                ContentLength=len(body),
                ChecksumSHA256=_b64(sha256.raw),
                **self._put_args(),
            )
        except (ClientError, BotoCoreError) as exc:
            self._fail(f"cannot store {sha256}", exc)

    async def _put_multipart(self, key: str, chunks: AsyncIterator[bytes], size: int) -> None:
        bucket = self._settings.bucket
        extra = self._put_args()
        if self._checksum_parts:
            extra["ChecksumAlgorithm"] = "SHA256"
        try:
            created = await self._client.create_multipart_upload(Bucket=bucket, Key=key, **extra)
        except (ClientError, BotoCoreError) as exc:
            self._fail(f"cannot start an upload of {key}", exc)
        upload_id = created["UploadId"]
        try:
            parts = await self._upload_parts(key, upload_id, chunks, size)
            await self._client.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
            )
        except BaseException as exc:
            # Shielded: a cancelled put must not leave parts billed in the bucket.
            await asyncio.shield(self._abort(key, upload_id))
            if isinstance(exc, ClientError | BotoCoreError):
                self._fail(f"cannot upload {key}", exc)
            raise

    async def _abort(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(ClientError, BotoCoreError):
            await self._client.abort_multipart_upload(
                Bucket=self._settings.bucket, Key=key, UploadId=upload_id
            )

    async def _upload_parts(
        self, key: str, upload_id: str, chunks: AsyncIterator[bytes], size: int
    ) -> list[dict[str, Any]]:
        part_size = part_size_for(size, self._settings.multipart_chunk_bytes)
        slots = asyncio.Semaphore(self._part_concurrency)
        done: dict[int, dict[str, Any]] = {}

        async def upload(number: int, body: bytes) -> None:
            try:
                args: dict[str, Any] = {}
                if self._checksum_parts:
                    digest = await asyncio.to_thread(lambda: hashlib.sha256(body).digest())
                    args["ChecksumSHA256"] = _b64(digest)
                resp = await self._client.upload_part(
                    Bucket=self._settings.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                    ContentLength=len(body),
                    **args,
                )
                part: dict[str, Any] = {"PartNumber": number, "ETag": resp["ETag"]}
                if self._checksum_parts:
                    part["ChecksumSHA256"] = resp.get("ChecksumSHA256") or args["ChecksumSHA256"]
                done[number] = part
            finally:
                slots.release()

        # The semaphore is taken before a part is read, so at most
        # ``part_concurrency`` parts exist in memory at any time. The first
        # failure (of a part, or of the stream) cancels the rest and is
        # raised as itself, not wrapped in an exception group.
        tasks: list[asyncio.Task[None]] = []
        parts = rechunk(chunks, part_size)
        try:
            while True:
                await slots.acquire()
                if failed := _first_failed(tasks):
                    slots.release()
                    await failed  # raises the part's error
                try:
                    body = await anext(parts, b"")
                except BaseException:
                    slots.release()
                    raise
                if not body:  # rechunk never yields an empty part: this is the end
                    slots.release()
                    break
                tasks.append(asyncio.create_task(upload(len(tasks) + 1, body)))
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [done[n] for n in sorted(done)]

    async def put_file(self, sha256: Digest, path: Path, *, consume: bool = False) -> ObjectInfo:
        """Upload a staged file (streamed); with ``consume`` the file is removed afterwards.

        Raises:
            BackendUnavailableError: the file could not be read or the endpoint failed.
        """
        self._check_open()
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
        except OSError as exc:
            self._fail(f"cannot read staged file {path}", exc)
        try:
            info = await self.put_stream(sha256, iter_file(path), size)
        except OSError as exc:
            self._fail(f"cannot read staged file {path}", exc)
        if consume:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(path.unlink)
        return info

    # -- reads -----------------------------------------------------------------

    async def head(self, sha256: Digest) -> ObjectInfo | None:
        """The stored object's info, or None when absent."""
        self._check_open()
        key = self.key_for(sha256)
        try:
            resp = await self._client.head_object(Bucket=self._settings.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND:
                return None
            self._fail(f"cannot look up {sha256}", exc)
        except BotoCoreError as exc:
            self._fail(f"cannot look up {sha256}", exc)
        return ObjectInfo(sha256=sha256, size=resp["ContentLength"], key=key)

    def _not_found(self, sha256: Digest, exc: BaseException | None = None) -> BlobNotFoundError:
        err = BlobNotFoundError(
            f"{sha256} is not stored on backend {self._settings.name!r}",
            backend=self._settings.name,
        )
        err.__cause__ = exc
        return err

    async def get(self, sha256: Digest, byte_range: ByteRange | None = None) -> ObjectStream:
        """Open a streamed read; the range goes to the endpoint as a ``Range`` header.

        Raises:
            BlobNotFoundError: no such object (before any byte flows).
            InvalidRangeError: the range selects no byte of the object.
            BackendUnavailableError: the endpoint failed after retries.
        """
        self._check_open()
        key = self.key_for(sha256)
        args: dict[str, Any] = {"Bucket": self._settings.bucket, "Key": key}
        header = _range_header(byte_range)
        if header is not None:
            args["Range"] = header
        try:
            resp = await self._client.get_object(**args)
        except ClientError as exc:
            code = _error_code(exc)
            if code in _NOT_FOUND:
                raise self._not_found(sha256, exc) from exc
            if code in _BAD_RANGE:
                info = await self.head(sha256)
                if info is None:
                    raise self._not_found(sha256, exc) from exc
                # Let the shared rules word the error; the endpoint agreed.
                resolve_range(byte_range, info.size)
                raise InvalidRangeError(
                    f"range {header} not satisfiable for size {info.size}", size=info.size
                ) from exc
            self._fail(f"cannot read {sha256}", exc)
        except BotoCoreError as exc:
            self._fail(f"cannot read {sha256}", exc)
        body = resp["Body"]
        try:
            resolved, skip = self._resolve_response(resp, byte_range)
        except BaseException:
            body.close()
            raise

        async def release() -> None:
            body.close()

        chunks = ClosingChunks(self._body_chunks(sha256, body, resolved, skip), release)
        return ObjectStream(
            info=ObjectInfo(sha256=sha256, size=resolved.size, key=key),
            range=resolved,
            chunks=chunks,
        )

    def _resolve_response(
        self, resp: Any, byte_range: ByteRange | None
    ) -> tuple[ResolvedRange, int]:
        """The range the body holds, and how many leading body bytes to skip.

        Servers answer a range with 206 and ``Content-Range``; some answer a
        range on an empty object with 200 and the whole (empty) body. Both are
        checked against ``resolve_range`` so every backend agrees on edges.
        """
        length = int(resp["ContentLength"])
        content_range = resp.get("ContentRange")
        if content_range:
            m = _CONTENT_RANGE_RE.fullmatch(content_range)
            if m is None:
                raise BackendUnavailableError(
                    f"s3 backend {self._settings.name!r}: unparsable range answer "
                    f"{content_range!r}",
                    backend=self._settings.name,
                )
            first, last, total = (int(g) for g in m.groups())
            resolved = resolve_range(byte_range, total)
            if (first, last + 1) != (resolved.start, resolved.end):
                raise BackendUnavailableError(
                    f"s3 backend {self._settings.name!r}: asked for "
                    f"{resolved.content_range()}, endpoint sent {content_range}",
                    backend=self._settings.name,
                )
            return resolved, 0
        # Whole object (no range asked, or the endpoint ignored it).
        resolved = resolve_range(byte_range, length)
        return resolved, resolved.start

    async def _body_chunks(
        self, sha256: Digest, body: Any, resolved: ResolvedRange, skip: int
    ) -> AsyncGenerator[bytes, None]:
        remaining = resolved.length
        try:
            async for chunk in body.iter_chunks(DEFAULT_READ_CHUNK):
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk = chunk[dropped:]  # noqa: PLW2901 - trimming in place reads best
                    skip -= dropped
                if remaining <= 0 or not chunk:
                    continue
                chunk = chunk[:remaining]  # noqa: PLW2901
                remaining -= len(chunk)
                yield chunk
        except _STREAM_ERRORS as exc:
            self._fail(f"reading {sha256} broke off", exc)
        if remaining:
            raise BackendUnavailableError(
                f"s3 backend {self._settings.name!r}: {sha256} ended {remaining} bytes early",
                backend=self._settings.name,
            )

    # -- delete ----------------------------------------------------------------

    async def delete(self, sha256: Digest) -> bool:
        """Remove the object; True if it existed. Idempotent.

        S3 answers a delete of a missing key with success, so existence is
        checked first; a concurrent delete can make both callers see True.
        """
        self._check_open()
        if await self.head(sha256) is None:
            return False
        try:
            await self._client.delete_object(Bucket=self._settings.bucket, Key=self.key_for(sha256))
        except (ClientError, BotoCoreError) as exc:
            self._fail(f"cannot delete {sha256}", exc)
        return True

    # -- inventory -------------------------------------------------------------

    async def iter_objects(self) -> AsyncIterator[ObjectInfo]:
        """Every complete object under the prefix, once each, in key order; strays skipped.

        Unfinished multipart uploads are not objects, so they never appear.
        """
        self._check_open()
        listing_prefix = f"{self._prefix}/sha256/" if self._prefix else "sha256/"
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(
                Bucket=self._settings.bucket, Prefix=listing_prefix
            ):
                for entry in page.get("Contents", []):
                    key = entry.get("Key", "")
                    digest = digest_from_key(key, self._prefix)
                    if digest is not None:
                        yield ObjectInfo(sha256=digest, size=entry.get("Size", 0), key=key)
        except (ClientError, BotoCoreError) as exc:
            self._fail("cannot list objects", exc)

    # -- lifecycle -------------------------------------------------------------

    async def health(self) -> BackendHealth:
        """Ok when the bucket answers and a probe object can be written and removed.

        The probe lives under ``<prefix>/.health/``, outside the ``sha256/``
        tree that iteration reads. Never raises.
        """
        if self._closed:
            return BackendHealth(ok=False, detail="closed")
        bucket = self._settings.bucket
        probe = f"{self._prefix}/{HEALTH_DIR}/{uuid.uuid4().hex}".lstrip("/")
        where = f"{self._settings.endpoint_url or 'default endpoint'} bucket {bucket}"
        try:
            await self._client.head_bucket(Bucket=bucket)
            await self._client.put_object(Bucket=bucket, Key=probe, Body=b"ok", ContentLength=2)
            await self._client.delete_object(Bucket=bucket, Key=probe)
        except ClientError as exc:
            return BackendHealth(ok=False, detail=f"{where}: {_error_code(exc) or exc}")
        except BotoCoreError as exc:
            return BackendHealth(ok=False, detail=f"{where}: {exc}")
        return BackendHealth(ok=True, detail=where)

    async def aclose(self) -> None:
        """Close the client and its connection pool; idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._stack.aclose()


async def open_s3(settings: S3BackendSettings, database_url: str | None = None) -> S3Backend:
    """Open the ``s3`` backend with default tuning (``database_url`` is unused)."""
    del database_url
    return await S3Backend.open(settings)
