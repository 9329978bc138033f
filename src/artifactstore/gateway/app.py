"""The S3 read gateway as an ASGI application (DESIGN section 8).

Owns: the ASGI plumbing (lifespan, one request in, one reply out, bodies
streamed chunk by chunk with back-pressure, disconnects noticed on long
bodies), the order of the steps every request takes (address, authenticate,
classify, dispatch), the request id (``x-amz-request-id`` and
``x-amz-id-2`` on every reply, ``RequestId`` in every error document),
turning any exception into an S3 error document (``gateway/errors.py``; a
bad request is never a 500), and the access log (one JSON line per request
on ``artifactstore.gateway.access``; no header values, so no signature
reaches a log).

It does not parse signatures (``sigv4.py``, ``sigv2.py``, via ``auth.py``), decide
addressing (``routing.py``), list (``buckets.py``, ``listing.py``) or build
object headers (``objects.py``). Plain ASGI rather than a framework: the
gateway has no routes in the web-framework sense, and the hot path
(a 4 KiB GET) stays a handful of awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from artifactstore.db.outage import RETRY_AFTER_SECONDS
from artifactstore.gateway import buckets
from artifactstore.gateway.auth import Authenticator
from artifactstore.gateway.catalog import Catalog
from artifactstore.gateway.errors import S3Error, s3_error_for
from artifactstore.gateway.listing import load_token_key
from artifactstore.gateway.objects import Reply, object_reply
from artifactstore.gateway.routing import Operation, Target, classify, host_bases, resolve_target
from artifactstore.gateway.sigv4 import parse_query
from artifactstore.registry import Registry

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    from artifactstore.config import Settings
    from artifactstore.storage.spi import ObjectStream

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]

__all__ = ["GatewayApp", "create_gateway_app"]

log = logging.getLogger("artifactstore.gateway")
access_log = logging.getLogger("artifactstore.gateway.access")

#: Bodies longer than this get a task that watches for the client going away.
WATCH_DISCONNECT_BYTES = 4 * 1024 * 1024
_SERVER = b"artifactstore"


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lower-cased names; repeated fields joined with ``, `` (RFC 9110 section 5.3)."""
    merged: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        merged[key] = f"{merged[key]}, {text}" if key in merged else text
    return merged


def _has_body(headers: dict[str, str]) -> bool:
    length = headers.get("content-length", "0").strip()
    return "transfer-encoding" in headers or length not in {"", "0"}


def _params(raw_query: bytes) -> dict[str, str]:
    """Query parameters decoded as they are signed (``sigv4.parse_query``); first value wins."""
    params: dict[str, str] = {}
    for name, value in parse_query(raw_query):
        params.setdefault(name, value)
    return params


class GatewayApp:
    """The ASGI callable: ``await app(scope, receive, send)``."""

    def __init__(self, settings: Settings, *, registry: Registry | None, host: str) -> None:
        self.settings = settings
        self.bind = host
        self.auth = Authenticator.from_settings(settings.gateway, host=host)
        self.bases = host_bases([settings.gateway.host, host])
        self._token_key: bytes | None = None
        self.include_yanked = settings.gateway.list_yanked
        self._registry = registry
        self._owned = registry is None
        self._catalog = Catalog(registry) if registry is not None else None

    @property
    def registry(self) -> Registry:
        """The registry in use (opened by the lifespan when none was handed in)."""
        if self._registry is None:
            raise RuntimeError("the gateway's registry is not open (lifespan not run)")
        return self._registry

    @property
    def catalog(self) -> Catalog:
        """The cached bucket and object look-ups."""
        if self._catalog is None:
            raise RuntimeError("the gateway's registry is not open (lifespan not run)")
        return self._catalog

    async def token_key(self) -> bytes:
        """The continuation-token key, loaded from the database once (at start-up, by the lifespan).

        An app served without a lifespan (``httpx.ASGITransport``) loads it at
        its first listing instead; concurrent first loads agree, as replicas do.
        """
        if self._token_key is None:
            self._token_key = await load_token_key(self.registry.engine, self.settings.data_dir)
        return self._token_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope: ``http`` requests and the ``lifespan``."""
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    # -- lifespan ------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self._registry is None:
                        self._registry = await Registry.open(self.settings)
                        self._catalog = Catalog(self._registry)
                    await self.token_key()
                    await self.catalog.deletions.start()
                except Exception as exc:
                    log.exception("S3 gateway failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._catalog is not None:
                    await self._catalog.aclose()
                if self._owned and self._registry is not None:
                    await self._registry.aclose()
                    self._registry = None
                    self._catalog = None
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- requests ------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = os.urandom(8).hex().upper()
        method: str = scope["method"]
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        raw_query: bytes = scope.get("query_string", b"")
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        headers = _headers(raw_headers)
        target: Target | None = None
        principal = "-"
        operation = "-"
        try:
            target = resolve_target(headers.get("host"), raw_path, self.bases)
            params = _params(raw_query)
            principal = self.auth.authenticate(
                method,
                raw_path,
                raw_query,
                raw_headers,
                bucket_in_host=target.bucket if target.virtual_host else None,
            )
            op = classify(method, target, params)
            operation = op.value
            reply = await self._dispatch(op, target, method, headers, params)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an S3 error document
            reply = self._error(exc, target, request_id)
        if _has_body(headers):
            # The body is never read. After a final answer to "Expect: 100-continue"
            # the client may not send it at all, so the connection cannot carry
            # another request reliably: close it (RFC 9110 section 10.1.1).
            reply.headers.append(("Connection", "close"))
        sent = 0
        try:
            sent = await self._send(reply, request_id, receive, send)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    json.dumps(
                        {
                            "op": operation,
                            "method": method,
                            "path": scope["path"],
                            "status": reply.status,
                            "ms": round((time.perf_counter() - started) * 1000, 2),
                            "out": sent,
                            "principal": principal,
                            "request_id": request_id,
                            "client": (scope.get("client") or ("", 0))[0],
                        },
                        separators=(",", ":"),
                    )
                )

    async def _dispatch(
        self,
        op: Operation,
        target: Target,
        method: str,
        headers: dict[str, str],
        params: dict[str, str],
    ) -> Reply:
        if op is Operation.LIST_BUCKETS:
            return await buckets.list_buckets(self.registry)
        bucket = target.bucket
        assert bucket is not None  # classify: every other operation names a bucket
        if op in {Operation.GET_OBJECT, Operation.HEAD_OBJECT}:
            assert target.key is not None
            record = await self.catalog.file(bucket, target.key)
            return await object_reply(
                self.catalog, record, method=method, headers=headers, params=params
            )
        await self.catalog.require_bucket(bucket)
        if op is Operation.HEAD_BUCKET:
            return buckets.head_bucket()
        if op is Operation.GET_BUCKET_LOCATION:
            return buckets.location()
        if op is Operation.LIST_OBJECTS_V2:
            return await buckets.list_objects_v2(
                self.registry,
                bucket,
                params,
                token_key=await self.token_key(),
                include_yanked=self.include_yanked,
            )
        return await buckets.list_objects_v1(
            self.registry, bucket, params, include_yanked=self.include_yanked
        )

    def _error(self, exc: Exception, target: Target | None, request_id: str) -> Reply:
        resource = target.resource if target is not None else None
        error = s3_error_for(exc, resource=resource)
        if error.code == "InternalError" and not isinstance(exc, S3Error):
            log.error("S3 gateway request %s failed", request_id, exc_info=exc)
        body = error.to_xml(request_id=request_id)
        headers = [("Content-Type", "application/xml")]
        if error.status == HTTPStatus.SERVICE_UNAVAILABLE:
            headers.append(("Retry-After", str(RETRY_AFTER_SECONDS)))
        return Reply(error.status, headers, body)

    # -- sending -------------------------------------------------------------

    async def _send(self, reply: Reply, request_id: str, receive: Receive, send: Send) -> int:
        """Send the reply; returns the body bytes handed to the server."""
        rid = request_id.encode("ascii")
        headers = [(b"x-amz-request-id", rid), (b"x-amz-id-2", rid), (b"server", _SERVER)]
        headers += [(n.lower().encode("latin-1"), v.encode("utf-8")) for n, v in reply.headers]
        stream = reply.stream
        if stream is None:
            has_length = any(n == b"content-length" for n, _ in headers)
            if not has_length and (reply.body or reply.status not in {204, 304}):
                headers.append((b"content-length", str(len(reply.body)).encode("ascii")))
            await send({"type": "http.response.start", "status": reply.status, "headers": headers})
            await send({"type": "http.response.body", "body": reply.body, "more_body": False})
            return len(reply.body)
        try:
            await send({"type": "http.response.start", "status": reply.status, "headers": headers})
            if stream.range.length <= WATCH_DISCONNECT_BYTES:
                sent = 0
                async for chunk in stream.chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    sent += len(chunk)
            else:
                sent = await _send_watched(stream, receive, send)
                if sent < stream.range.length:
                    return sent  # the client left; the server closes the connection
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return sent
        finally:
            await stream.aclose()


async def _send_watched(stream: ObjectStream, receive: Receive, send: Send) -> int:
    """Stream chunks until the end or until the client disconnects."""
    gone = asyncio.Event()

    async def watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
                return

    watcher = asyncio.create_task(watch())
    sent = 0
    try:
        async for chunk in stream.chunks:
            if gone.is_set():
                break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sent += len(chunk)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return sent


def create_gateway_app(
    settings: Settings, *, registry: Registry | None = None, host: str | None = None
) -> GatewayApp:
    """The S3 read gateway for ``settings``.

    ``registry`` is shared with the REST API by ``artifactstore serve``;
    None opens one in the lifespan (and closes it on shutdown). ``host`` is
    the address the REST API binds; the gateway binds ``gateway.host`` when
    set, else the same, and that address decides anonymous reads. Resolves
    the credentials' secrets now; the lifespan loads (or, on a new database,
    creates) the continuation-token key shared by every replica.

    Raises:
        ConfigError: a credential's secret cannot be resolved.
    """
    bind = settings.gateway.host or host or settings.server.host
    return GatewayApp(settings, registry=registry, host=bind)
