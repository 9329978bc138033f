"""The CLI's HTTP client: which server, which token, and server errors back as exceptions.

Owns:

- resolving the server URL: ``--server``, else ``ARTIFACTSTORE_SERVER``, else
  ``config.DEFAULT_SERVER_URL``;
- resolving the token: ``--token``, else ``ARTIFACTSTORE_TOKEN``, else, when
  the server is on loopback, the ``admin-token`` file the server writes under
  its data dir (``ARTIFACTSTORE_DATA_DIR`` or ``config.default_data_dir()``);
- mapping the JSON error body of DESIGN section 5 back to the
  ``artifactstore.errors`` class with the same ``code`` (by HTTP status when
  the code is unknown), and transport failures to ``ServerUnreachableError``;
- bounded retries with exponential backoff for transfers (``retrying``);
- the ``--server`` and ``--token`` options every client command shares.

It does not print, know any command, or choose exit codes (``main.py`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Self, TypeVar
from urllib.parse import urlsplit

import httpx
import rich.console
import rich.progress
import typer

import artifactstore
from artifactstore import errors
from artifactstore.client.errors import ServerUnreachableError
from artifactstore.client.rawhttp import BulkTransportError, FileSender
from artifactstore.config import (
    DEFAULT_SERVER_URL,
    ENV_DATA_DIR,
    ENV_SERVER,
    default_data_dir,
    is_loopback,
)
from artifactstore.protocol import ADMIN_TOKEN_FILE, ENV_TOKEN
from artifactstore.storage.streams import read_file_range

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

__all__ = [
    "ADMIN_TOKEN_FILE",
    "ENV_TOKEN",
    "RETRY_BUDGET_SECONDS",
    "ApiClient",
    "Endpoint",
    "Progress",
    "ServerOption",
    "ServerUnreachableError",
    "TokenOption",
    "error_from_response",
    "first_error",
    "format_size",
    "is_retryable",
    "resolve_endpoint",
    "resolve_server",
    "resolve_token",
]

log = logging.getLogger("artifactstore.cli")

T = TypeVar("T")

USER_AGENT = f"artifactstore-cli/{artifactstore.__version__}"
TIMEOUT = httpx.Timeout(60.0, connect=10.0)

RETRY_BUDGET_SECONDS = 120.0
"""Longest a transfer keeps retrying one operation before giving up."""
RETRY_FIRST_DELAY = 0.5
RETRY_MAX_DELAY = 15.0


def _error_classes() -> dict[str, type[errors.ArtifactStoreError]]:
    found: dict[str, type[errors.ArtifactStoreError]] = {}
    for name in errors.__all__:
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, errors.ArtifactStoreError):
            found.setdefault(cls.code, cls)
    return found


ERRORS_BY_CODE = _error_classes()

# When a body carries no code we know: the family that the status means.
ERRORS_BY_STATUS: dict[int, type[errors.ArtifactStoreError]] = {
    400: errors.InvalidInputError,
    401: errors.UnauthorizedError,
    403: errors.ForbiddenError,
    404: errors.NotFoundError,
    409: errors.ConflictError,
    413: errors.TooLargeError,
    416: errors.InvalidRangeError,
    422: errors.InvalidInputError,
}


def resolve_server(option: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The server's base URL without a trailing slash.

    Raises:
        InvalidInputError: the URL is not ``http://`` or ``https://`` with a host.
    """
    env = os.environ if environ is None else environ
    text = option or env.get(ENV_SERVER) or DEFAULT_SERVER_URL
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise errors.InvalidInputError(f"server URL {text!r} is invalid: {exc}") from exc
    if url.scheme not in {"http", "https"} or not url.host:
        raise errors.InvalidInputError(
            f"server URL {text!r} must look like http://host:port", value=text
        )
    return text.rstrip("/")


def resolve_token(
    server_url: str, option: str | None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The bearer token to send, or None to go anonymous (reads on loopback need none).

    The ``admin-token`` file is only ever sent to a loopback server, so a
    local admin token never leaves the machine. An unreadable file counts as
    absent.
    """
    env = os.environ if environ is None else environ
    if option:
        return option.strip()
    if env.get(ENV_TOKEN):
        return env[ENV_TOKEN].strip()
    if not is_loopback(httpx.URL(server_url).host):
        return None
    data_dir = Path(env[ENV_DATA_DIR]) if env.get(ENV_DATA_DIR) else default_data_dir()
    try:
        token = (data_dir.expanduser() / ADMIN_TOKEN_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return token or None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to send requests and with which credentials."""

    url: str
    token: str | None

    def __repr__(self) -> str:
        return f"Endpoint(url={self.url!r}, token={'set' if self.token else 'none'})"


def resolve_endpoint(server: str | None, token: str | None) -> Endpoint:
    """The endpoint from the command's options and the environment (see the module doc)."""
    url = resolve_server(server)
    return Endpoint(url=url, token=resolve_token(url, token))


def error_from_response(response: httpx.Response) -> errors.ArtifactStoreError:
    """The exception a non-2xx response stands for.

    Reads the body (it must have been read). ``detail`` keeps the server's
    detail plus ``http_status``; an ``offset_mismatch`` takes its offset from
    the ``Upload-Offset`` header when the body lacks it.
    """
    status = response.status_code
    code, message, detail = "", "", {}
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code") or "")
        message = str(err.get("message") or "")
        if isinstance(err.get("detail"), dict):
            detail = dict(err["detail"])
    cls = ERRORS_BY_CODE.get(code) or ERRORS_BY_STATUS.get(status)
    if cls is None:
        cls = errors.UnavailableError if status >= 500 else errors.ArtifactStoreError  # noqa: PLR2004
    if not message:
        reason = response.reason_phrase or "error"
        message = f"server answered {status} {reason} to {response.request.method} "
        message += response.request.url.path
    if cls is errors.UploadOffsetMismatchError and "offset" not in detail:
        header = response.headers.get("upload-offset", "")
        if header.isdigit():
            detail["offset"] = int(header)
    exc = cls(message)
    exc.detail = {**detail, "http_status": status}
    return exc


def is_retryable(exc: BaseException) -> bool:
    """Transport failures and 5xx answers are worth retrying; 4xx answers are not."""
    if isinstance(exc, errors.UnavailableError):
        return True
    if isinstance(exc, errors.ArtifactStoreError):
        status = exc.detail.get("http_status")
        return isinstance(status, int) and status >= 500  # noqa: PLR2004
    return False


class ApiClient:
    """An ``httpx.AsyncClient`` on one endpoint that raises ``artifactstore.errors``.

    Use as ``async with ApiClient(endpoint) as api``. Every method raises the
    mapped error for a non-2xx answer and ``ServerUnreachableError`` when the
    connection fails.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        retry_seconds: float = RETRY_BUDGET_SECONDS,
        on_retry: Callable[[str], None] | None = None,
        max_connections: int = 16,
    ) -> None:
        headers = {"User-Agent": USER_AGENT}
        if endpoint.token:
            headers["Authorization"] = f"Bearer {endpoint.token}"
        self.endpoint = endpoint
        self.retry_seconds = retry_seconds
        self.on_retry = on_retry
        self._contacted = False
        # One trust store for both transports. Loading it costs ~40 ms of start-up,
        # so a plain-http client gets an empty context: no CA, any TLS use fails closed.
        if endpoint.url.startswith("https:"):
            ssl_context = httpx.create_ssl_context()
        else:
            ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._http = httpx.AsyncClient(
            base_url=endpoint.url,
            headers=headers,
            timeout=TIMEOUT,
            verify=ssl_context,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )
        # File bodies go around httpx with sendfile(2), unless a proxy must carry them.
        self._files: FileSender | None = None
        if not _proxied(endpoint.url):
            self._files = FileSender(
                endpoint.url,
                headers,
                timeout=TIMEOUT.read or 60.0,
                connect_timeout=TIMEOUT.connect or 10.0,
                max_idle=max_connections,
                ssl_context=ssl_context,
            )

    @property
    def direct(self) -> bool:
        """Whether requests go straight to the server (no proxy in between)."""
        return self._files is not None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pools."""
        if self._files is not None:
            self._files.close()
        await self._http.aclose()

    def _unreachable(self, exc: httpx.TransportError) -> ServerUnreachableError:
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
            raise self._unreachable(exc) from exc
        self._contacted = True
        if response.is_success:
            return response
        raise error_from_response(response)

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
    ) -> httpx.Response:
        """Send ``length`` bytes of ``file`` from ``offset`` as the body; errors as ``request``.

        Zero-copy (``cli.bulk.FileSender``) where the connection is direct;
        through httpx, read in blocks, when a proxy is configured.
        ``on_progress(n)`` reports bytes handed to the connection.

        Raises:
            SizeMismatchError: the file is shorter than the range.
        """
        if self._files is None:
            return await self.request(
                method,
                path,
                params=params,
                content=_file_blocks(file, offset, length, on_progress),
                headers={**headers, "Content-Length": str(length)},  # not chunked: proxies
            )
        try:
            raw = await self._files.send_range(
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
            raise ServerUnreachableError(
                f"cannot reach the server at {self.endpoint.url}: {exc}"
            ) from exc
        self._contacted = True
        response = httpx.Response(
            raw.status,
            headers=raw.headers,
            content=raw.body,
            request=httpx.Request(method, self._http.base_url.join(path), params=params),
        )
        if response.is_success:
            return response
        raise error_from_response(response)

    async def get_json(self, path: str, **kwargs: Any) -> Any:
        """GET ``path`` and decode its JSON body."""
        response = await self.request("GET", path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise errors.ArtifactStoreError(f"GET {path}: the server sent invalid JSON") from exc

    @contextlib.asynccontextmanager
    async def stream(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        """A streamed 2xx response (body not yet read); errors as for ``request``."""
        try:
            async with self._http.stream(method, path, **kwargs) as response:
                self._contacted = True
                if not response.is_success:
                    await response.aread()
                    raise error_from_response(response)
                yield response
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc

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
        most ``retry_seconds`` in all. ``attempt`` is 0 the first time, so an
        operation can re-synchronise (e.g. ask for the upload offset) before
        trying again. A server that was never reached is not retried: nothing
        is listening, and saying so at once is more useful than waiting.

        Raises:
            ArtifactStoreError: the last failure, or the first one not worth retrying.
        """
        started = time.monotonic()
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
                if time.monotonic() - started + delay > self.retry_seconds:
                    raise
                message = f"{what}: {exc.message}; retrying in {delay:.1f}s"
                log.debug(message)
                if self.on_retry is not None:
                    self.on_retry(message)
                await asyncio.sleep(delay)
                attempt += 1


# --------------------------------------------------------------------------- shared CLI bits

ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        metavar="URL",
        help=f"Registry URL (or {ENV_SERVER}; default {DEFAULT_SERVER_URL}).",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        metavar="TOKEN",
        help=f"API token (or {ENV_TOKEN}; on loopback the server's admin-token file).",
        show_default=False,
    ),
]


def _proxied(url: str) -> bool:
    """Whether httpx would send requests to ``url`` through a proxy (environment)."""
    proxies = urllib.request.getproxies()
    parts = urlsplit(url)
    if parts.scheme not in proxies and "all" not in proxies:
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


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


def format_size(size: int) -> str:
    """Bytes for people: ``512 B``, ``1.5 KiB``, ``3.2 GiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":  # noqa: PLR2004
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - the loop always returns


class Progress:
    """Byte progress bars on stderr when it is a terminal; silent otherwise.

    Thread-safe (rich locks internally), so hashing threads may report too.
    Use as a context manager; ``task`` returns an id for ``advance``.
    """

    def __init__(self, *, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bars: rich.progress.Progress | None = None
        if self.enabled:
            self._bars = rich.progress.Progress(
                rich.progress.TextColumn("{task.description}"),
                rich.progress.BarColumn(),
                rich.progress.DownloadColumn(binary_units=True),
                rich.progress.TransferSpeedColumn(),
                rich.progress.TimeRemainingColumn(),
                console=rich.console.Console(stderr=True),
            )

    def __enter__(self) -> Self:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._bars is not None:
            self._bars.stop()

    def task(self, description: str, total: int) -> int:
        """Start a bar of ``total`` bytes; returns its id (-1 when silent)."""
        if self._bars is None:
            return -1
        return int(self._bars.add_task(description, total=total))

    def advance(self, task: int, amount: int) -> None:
        """Move a bar by ``amount`` bytes (negative to take back unacknowledged bytes)."""
        if self._bars is not None and task >= 0:
            self._bars.advance(rich.progress.TaskID(task), amount)

    def note(self, message: str) -> None:
        """A line on stderr that does not tear the bars."""
        if self._bars is not None:
            self._bars.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=sys.stderr)


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real failure in a task group's exceptions (cancellations come last).

    ``asyncio.TaskGroup`` wraps failures in an exception group; the CLI
    reports one error, the one that made the group cancel the rest.
    """
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for exc in leaves:
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return leaves[0] if leaves else group
