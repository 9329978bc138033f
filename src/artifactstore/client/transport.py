"""HTTP to one server: requests that raise ``artifactstore.errors``, bulk bodies, retries.

Owns the two connection pools of a client: httpx for requests with small
bodies (JSON, manifests, streamed reads of one file), and ``rawhttp`` for
bulk bodies, which go out with ``sendfile(2)`` and come back with
``recv_into`` straight into the download's buffers (no Python ``bytes`` per
chunk). Bulk bodies go through httpx instead when a proxy must carry them.

Every non-2xx answer becomes the ``artifactstore.errors`` class its JSON
error body names (``protocol.error_from_body``), every transport failure a
``ServerUnreachableError``; ``retrying`` retries both kinds of transient
failure with exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self, TypeVar
from urllib.parse import quote

import httpx

import artifactstore
from artifactstore import errors
from artifactstore.client.errors import ServerUnreachableError
from artifactstore.client.rawhttp import BulkTransportError, FileSender, RawResponse
from artifactstore.protocol import DEPLOYMENT_HEADER, OFFSET_HEADER, error_from_body
from artifactstore.storage.streams import coalesce, read_file_range

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
    from pathlib import Path

    from artifactstore.client.endpoint import Endpoint
    from artifactstore.client.sink import VerifiedFile

__all__ = ["Answer", "Transport", "is_retryable", "version_path"]

log = logging.getLogger("artifactstore.client")

T = TypeVar("T")

USER_AGENT = f"artifactstore-client/{artifactstore.__version__}"
RETRY_FIRST_DELAY = 0.5
RETRY_MAX_DELAY = 15.0


@dataclass(frozen=True, slots=True)
class Answer:
    """A bulk request's 2xx answer: status, headers (lower-case names) and the small body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise errors.IntegrityError("the server sent invalid JSON") from exc


def version_path(package: str, version: str) -> str:
    """The REST path of one version (names percent-encoded whole)."""
    return f"/v1/packages/{quote(package, safe='')}/versions/{quote(version, safe='')}"


def is_retryable(exc: BaseException) -> bool:
    """Transport failures, 5xx answers and 408s are worth retrying; other 4xx and 507 are not.

    A 408 says this client's request stalled (the server cut it off after
    ``server.header_timeout_seconds`` or ``body_timeout_seconds``); trying
    again, from the session's offset for an upload, is what helps. A 507 (a
    full disk, ``InsufficientStorageError``) does not go away in seconds.
    """
    if isinstance(exc, errors.InsufficientStorageError):
        return False
    if isinstance(exc, errors.UnavailableError | errors.RequestTimeoutError):
        return True
    if isinstance(exc, errors.ArtifactStoreError):
        status = exc.detail.get("http_status")
        return isinstance(status, int) and status >= 500  # noqa: PLR2004
    return False


def _error(response: httpx.Response) -> errors.ArtifactStoreError:
    try:
        body = response.json()
    except ValueError:
        body = None
    fallback = f"server answered {response.status_code} {response.reason_phrase or 'error'}"
    fallback += f" to {response.request.method} {response.request.url.path}"
    return error_from_body(
        response.status_code,
        body,
        fallback=fallback,
        offset_header=response.headers.get(OFFSET_HEADER),
    )


def _ssl_context(endpoint: Endpoint) -> ssl.SSLContext:
    """One trust store for both pools.

    Loading the system's CAs costs ~40 ms of start-up, so a plain-http
    client gets an empty context: no CA, so any TLS use fails closed.
    """
    if not endpoint.url.startswith("https:"):
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if endpoint.ca_bundle:
        return ssl.create_default_context(cafile=endpoint.ca_bundle)
    return httpx.create_ssl_context()


class Transport:
    """Requests to one endpoint; use as ``async with Transport(endpoint) as http``."""

    def __init__(self, endpoint: Endpoint, *, max_connections: int = 16) -> None:
        headers = {"User-Agent": USER_AGENT}
        if endpoint.token:
            headers["Authorization"] = f"Bearer {endpoint.token}"
        self.endpoint = endpoint
        self._contacted = False
        self.deployment: str | None = None
        """The deployment the server names in its answers (``DEPLOYMENT_HEADER``), once seen."""
        context = _ssl_context(endpoint)
        timeout = httpx.Timeout(endpoint.timeout, connect=endpoint.connect_timeout)
        self._http = httpx.AsyncClient(
            base_url=endpoint.url,
            headers=headers,
            timeout=timeout,
            verify=context,
            proxy=endpoint.proxy,
            trust_env=endpoint.trust_env,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )
        self.bulk: FileSender | None = None
        if endpoint.proxy_for_bulk() is None:
            self.bulk = FileSender(
                endpoint.url,
                headers,
                timeout=endpoint.timeout,
                connect_timeout=endpoint.connect_timeout,
                max_idle=max_connections,
                ssl_context=context,
            )

    @property
    def direct(self) -> bool:
        """Whether requests go straight to the server (no proxy in between)."""
        return self.bulk is not None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close both connection pools."""
        if self.bulk is not None:
            self.bulk.close()
        await self._http.aclose()

    def _answered(self, deployment: str | None) -> None:
        """Note that the server answered, and the deployment it named, if any."""
        self._contacted = True
        if deployment:
            self.deployment = deployment

    def unreachable(self, exc: BaseException) -> ServerUnreachableError:
        """The error for a failed connection (the server may never have seen the request)."""
        reason = str(exc) or type(exc).__name__
        return ServerUnreachableError(f"cannot reach the server at {self.endpoint.url}: {reason}")

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request and return the (read) 2xx response.

        Raises:
            ArtifactStoreError: the mapped error of a non-2xx answer.
            ServerUnreachableError: connecting or talking to the server failed.
        """
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from exc
        self._answered(response.headers.get(DEPLOYMENT_HEADER))
        if response.is_success:
            return response
        raise _error(response)

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request and decode its JSON answer."""
        response = await self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise errors.IntegrityError(f"{method} {path}: the server sent invalid JSON") from exc

    @contextlib.asynccontextmanager
    async def stream(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        """A streamed 2xx response (body not yet read); errors as for ``request``."""
        try:
            async with self._http.stream(method, path, **kwargs) as response:
                self._contacted = True
                if not response.is_success:
                    await response.aread()
                    raise _error(response)
                yield response
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from exc

    def raw_error(self, method: str, path: str, raw: RawResponse) -> errors.ArtifactStoreError:
        """The error a bulk answer stands for."""
        try:
            body = json.loads(raw.body)
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in raw.headers}
        return error_from_body(
            raw.status,
            body,
            fallback=f"server answered {raw.status} to {method} {path}",
            offset_header=headers.get(OFFSET_HEADER.lower()),
        )

    async def send_file(
        self,
        method: str,
        path: str,
        file: Path,
        offset: int,
        length: int,
        *,
        headers: Mapping[str, str],
        on_progress: Callable[[int], None],
        params: Mapping[str, str] | None = None,
    ) -> Answer:
        """Send ``length`` bytes of ``file`` from ``offset`` as the body; errors as ``request``.

        ``on_progress(n)`` reports bytes handed to the connection.

        Raises:
            SizeMismatchError: the file is shorter than the range.
        """
        if self.bulk is None:
            response = await self.request(
                method,
                path,
                params=params,
                content=_file_blocks(file, offset, length, on_progress),
                headers={**headers, "Content-Length": str(length)},  # not chunked: proxies
            )
            headers = {name.lower(): value for name, value in response.headers.items()}
            return Answer(response.status_code, headers, response.content)
        try:
            raw = await self.bulk.send_range(
                method,
                path,
                file,
                offset,
                length,
                headers=headers,
                params=params,
                on_progress=on_progress,
            )
        except BulkTransportError as exc:
            raise self.unreachable(exc) from exc
        answer = Answer(raw.status, {name.lower(): value for name, value in raw.headers}, raw.body)
        self._answered(answer.headers.get(DEPLOYMENT_HEADER.lower()))
        if not 200 <= raw.status < 300:  # noqa: PLR2004
            raise self.raw_error(method, path, raw)
        return answer

    async def get_into(
        self, path: str, sink: VerifiedFile, on_progress: Callable[[int], None]
    ) -> None:
        """GET ``path`` into ``sink``, from ``sink.written`` on (``Range``); errors as ``request``.

        Straight into the sink's buffers with ``recv_into`` where the
        connection is direct; through httpx when a proxy must carry it.

        Raises:
            SizeMismatchError: the server sent more than the sink's size.
        """
        if self.bulk is None:
            await self._get_through_httpx(path, sink, on_progress)
            return
        try:
            raw = await self.bulk.get_into(path, sink, on_progress=on_progress)
        except BulkTransportError as exc:
            raise self.unreachable(exc) from exc
        self._contacted = True
        if not 200 <= raw.status < 300:  # noqa: PLR2004
            raise self.raw_error("GET", path, raw)

    async def _get_through_httpx(
        self, path: str, sink: VerifiedFile, on_progress: Callable[[int], None]
    ) -> None:
        headers = {"Range": f"bytes={sink.written}-"} if sink.written else {}
        async with self.stream("GET", path, headers=headers) as response:
            if sink.written and response.status_code != 206:  # noqa: PLR2004 - Range ignored
                on_progress(-sink.written)
                await asyncio.to_thread(sink.restart)
            async for block in coalesce(response.aiter_raw(), 1024 * 1024):
                await asyncio.to_thread(sink.write, block)
                on_progress(len(block))

    async def retrying(
        self,
        what: str,
        operation: Callable[[int], Awaitable[T]],
        *,
        also_retry: Callable[[BaseException], bool] | None = None,
    ) -> T:
        """Run ``operation(attempt)`` until it succeeds, retrying transient failures.

        Retries transport failures and 5xx answers (and whatever
        ``also_retry`` accepts) with exponential backoff and jitter, for at
        most the endpoint's ``retry_seconds`` in all. ``attempt`` is 0 the
        first time, so an operation can re-synchronise (e.g. ask for the
        upload offset) before trying again. A server that was never reached
        is not retried: nothing is listening, and saying so at once helps more.
        When the budget runs out after retries, the last failure is raised
        as its own class saying so (``gave up after N attempts``, ``detail
        ["attempts"]``), so a command's last line tells it stopped by design.

        Raises:
            ArtifactStoreError: the last failure, or the first one not worth retrying.
        """
        started = time.monotonic()
        budget = self.endpoint.retry_seconds
        attempt = 0
        while True:
            try:
                return await operation(attempt)
            except errors.ArtifactStoreError as exc:
                retry = is_retryable(exc) or (also_retry is not None and also_retry(exc))
                if not retry or not self._contacted:
                    raise
                delay = min(RETRY_MAX_DELAY, RETRY_FIRST_DELAY * 2**attempt)
                delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
                elapsed = time.monotonic() - started
                if elapsed + delay > budget:
                    if not attempt:
                        raise
                    raise _gave_up(exc, attempt + 1, elapsed) from exc
                log.warning(
                    "%s: %s; retrying in %.1fs (attempt %d, for up to %.0fs)",
                    what,
                    exc.message,
                    delay,
                    attempt + 1,
                    budget,
                )
                await asyncio.sleep(delay)
                attempt += 1


def _gave_up(exc: errors.ArtifactStoreError, attempts: int, elapsed: float) -> Exception:
    """The last failure, saying that retrying it ran out (same class, same detail)."""
    message = f"{exc.message} (gave up after {attempts} attempts in {elapsed:.0f}s)"
    return type(exc)(message, **{**exc.detail, "attempts": attempts})


async def _file_blocks(
    file: Path, offset: int, length: int, on_progress: Callable[[int], None]
) -> AsyncIterator[bytes]:
    """``length`` bytes of ``file`` from ``offset`` in 4 MiB blocks, reporting each."""
    fh = await asyncio.to_thread(file.open, "rb")
    try:
        async for block in read_file_range(fh, offset, offset + length, 4 << 20):
            on_progress(len(block))
            yield block
    finally:
        await asyncio.to_thread(fh.close)
