"""Streaming a blob as an HTTP response (Range, conditionals, digest headers); capped bodies.

Both ``/v1/blobs/...`` and ``/v1/packages/.../files/...`` answer through
``blob_response``. The backend is opened before the status line is chosen, so
a missing blob is a 404 and an unsatisfiable range a 416, never a broken
stream. Headers: ``ETag`` (quoted sha256 hex), ``Repr-Digest`` (RFC 9530,
of the whole representation), ``X-Blake3``, ``Accept-Ranges``,
``Content-Range`` on 206.

Request bodies a handler needs whole (manifests, small blobs) are read by
``read_capped``, which stops at the limit instead of buffering past it.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from starlette.responses import Response, StreamingResponse

from artifactstore.errors import TooLargeError
from artifactstore.http_ranges import (
    evaluate_preconditions,
    format_http_date,
    if_range_allows,
    parse_range_header,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from datetime import datetime

    from fastapi import Request

    from artifactstore.digests import Digest
    from artifactstore.registry import Registry
    from artifactstore.storage.spi import ObjectStream

__all__ = ["blob_headers", "blob_response", "read_capped"]


async def read_capped(request: Request, limit: int, what: str) -> bytes:
    """The whole request body, refused as soon as it passes ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before a byte is
    read; a chunked body is counted as it arrives, so at most ``limit`` bytes
    are ever held.

    Raises:
        TooLargeError: the body is longer than ``limit`` (a 413).
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLargeError(f"{what} exceeds {limit} bytes", limit=limit)
    parts: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise TooLargeError(f"{what} exceeds {limit} bytes", limit=limit)
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def blob_headers(sha256: Digest, blake3: Digest, last_modified: datetime) -> dict[str, str]:
    """The identity headers every blob response carries."""
    return {
        "ETag": f'"{sha256.hex}"',
        "Repr-Digest": f"sha-256=:{base64.b64encode(sha256.raw).decode()}:",
        "X-Blake3": blake3.hex,
        "Accept-Ranges": "bytes",
        "Last-Modified": format_http_date(last_modified),
        "Cache-Control": "public, max-age=31536000, immutable",
    }


async def _body(stream: ObjectStream) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream.chunks:
            yield chunk
    finally:
        await stream.aclose()


async def blob_response(
    request: Request,
    registry: Registry,
    *,
    sha256: Digest,
    blake3: Digest,
    last_modified: datetime,
    media_type: str = "application/octet-stream",
    filename: str | None = None,
) -> Response:
    """A 200/206/304/412/416 response for one blob (HEAD: headers only)."""
    headers = blob_headers(sha256, blake3, last_modified)
    if filename is not None:
        headers["Content-Disposition"] = _disposition(filename)
    status = evaluate_preconditions(request.method, request.headers, headers["ETag"], last_modified)
    if status is not None:
        return Response(status_code=status, headers=headers)
    byte_range = parse_range_header(request.headers.get("range"))
    if byte_range is not None and not if_range_allows(
        request.headers, headers["ETag"], last_modified
    ):
        byte_range = None
    stream = await registry.open_blob(sha256, byte_range)
    resolved = stream.range
    code = 200
    if byte_range is not None:
        code = 206
        headers["Content-Range"] = resolved.content_range()
    headers["Content-Length"] = str(resolved.length)
    if request.method == "HEAD":
        await stream.aclose()
        return Response(status_code=code, headers=headers, media_type=media_type)
    return StreamingResponse(
        _body(stream), status_code=code, headers=headers, media_type=media_type
    )


def _disposition(filename: str) -> str:
    name = filename.rsplit("/", 1)[-1]
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    from urllib.parse import quote  # noqa: PLC0415 - only for this header

    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
