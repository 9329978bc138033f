"""``/v1/uploads``: resumable upload sessions (DESIGN section 5).

Bodies stream from the socket into the session's staged file; nothing is
buffered whole. ``Upload-Offset`` carries the resume point both ways.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Annotated
from urllib.parse import quote

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from artifactstore.api.schemas import CreateUpload, blob_json, parse_digest, session_json
from artifactstore.api.services import ActorRead, ActorWrite, Services, ServicesDep
from artifactstore.config import is_loopback
from artifactstore.errors import InvalidInputError, NotFoundError
from artifactstore.protocol import HANDOFF_HEADER, OFFSET_HEADER
from artifactstore.registry import BlobRecord

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["router"]

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])

MAX_OFFSET = 2**63 - 1  # PostgreSQL bigint and off_t
OffsetHeader = Annotated[
    str | None, Header(alias=OFFSET_HEADER, pattern=r"^[0-9]{1,19}$")
]  # digits only (RFC 9110 non-negative integer): "+0", " 1" and "1_0" are 400s
LengthHeader = Annotated[int | None, Header(alias="Content-Length", ge=0)]


def _offset(header: str | None) -> int | None:
    """The ``Upload-Offset`` header's value (the pattern already checked its digits)."""
    if header is None:
        return None
    value = int(header)
    if value > MAX_OFFSET:
        raise InvalidInputError("Upload-Offset is beyond 2**63 - 1", value=header)
    return value


def _session_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidInputError("upload id must be a UUID", id=value[:64]) from None


def _handoff_path(request: Request, services: Services) -> str | None:
    """Where a client on this machine may hand files over (``api.handoff``); None elsewhere."""
    peer = request.client
    handoff = services.handoff
    if handoff is None or not handoff.active or peer is None or not is_loopback(peer.host):
        return None
    return os.fspath(handoff.path)


def _handoff_header(request: Request, services: Services) -> dict[str, str]:
    path = _handoff_path(request, services)
    return {} if path is None else {HANDOFF_HEADER: quote(path)}


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


@router.get("/handoff", summary="The same-host handoff socket (to peers on this machine)")
async def handoff_socket(request: Request, services: ServicesDep, _actor: ActorRead) -> Response:
    """200 ``{"socket", "server"}`` to a peer on loopback while the socket listens; 404 otherwise.

    A client on this machine hands files over this socket instead of sending
    their bytes (``api/handoff.py``, docs/design/0002).
    """
    path = _handoff_path(request, services)
    if path is None:
        raise NotFoundError("no same-host handoff for this client")
    assert services.handoff is not None  # a path means a listener
    return JSONResponse(
        {"socket": path, "server": services.handoff.server_id},
        headers={"Cache-Control": "no-store"},
    )


@router.post("", status_code=201, summary="Open an upload session (or learn the blob exists)")
async def create_upload(
    body: CreateUpload, request: Request, services: ServicesDep, actor: ActorWrite
) -> Response:
    """201 with a session, or 200 ``{"status": "exists", ...blob}`` when the blob is held."""
    result = await services.uploads.create(
        size=body.size,
        sha256=parse_digest(body.sha256, "sha256"),
        blake3=parse_digest(body.blake3, "blake3"),
        producer=body.producer,
        retention_class=body.retention_class,
        actor=actor,
    )
    if isinstance(result, BlobRecord):
        return JSONResponse({"status": "exists", **blob_json(result)}, status_code=200)
    location = f"/v1/uploads/{result.id}"
    return JSONResponse(
        session_json(result),
        status_code=201,
        headers={"Location": location, OFFSET_HEADER: "0", **_handoff_header(request, services)},
    )


@router.patch("/{upload_id}", status_code=204, summary="Append a chunk at Upload-Offset")
async def append_chunk(
    upload_id: str,
    request: Request,
    services: ServicesDep,
    _actor: ActorWrite,
    upload_offset: OffsetHeader = None,
    content_length: LengthHeader = None,
) -> Response:
    """Append the body at ``Upload-Offset``; 204 with the new offset once durable."""
    offset = _offset(upload_offset)
    if offset is None:
        raise InvalidInputError("the Upload-Offset header is required")
    session_id = _session_id(upload_id)
    new_offset = await services.uploads.append(
        session_id, offset, _body(request), content_length=content_length
    )
    services.metrics.appended_at(offset)
    return Response(status_code=204, headers={OFFSET_HEADER: str(new_offset)})


@router.head("/{upload_id}", summary="The resume point of a session")
async def head_upload(
    upload_id: str, request: Request, services: ServicesDep, _actor: ActorWrite
) -> Response:
    """200 with ``Upload-Offset`` (and ``Upload-Handoff`` for a peer on this machine)."""
    session = await services.uploads.get(_session_id(upload_id))
    return Response(
        status_code=200,
        headers={
            OFFSET_HEADER: str(session.offset),
            "Upload-Expires": session.expires_at.isoformat(),
            "Cache-Control": "no-store",
            **_handoff_header(request, services),
        },
    )


@router.get("/{upload_id}", summary="A session's state")
async def get_upload(upload_id: str, services: ServicesDep, _actor: ActorWrite) -> Response:
    """The session as JSON."""
    session = await services.uploads.get(_session_id(upload_id))
    return JSONResponse(session_json(session), headers={OFFSET_HEADER: str(session.offset)})


@router.put("/{upload_id}", status_code=201, summary="Finalize: verify digests and store")
async def finalize_upload(
    upload_id: str,
    request: Request,
    services: ServicesDep,
    actor: ActorWrite,
    sha256: Annotated[str | None, Query(max_length=71)] = None,
    blake3: Annotated[str | None, Query(max_length=71)] = None,
    upload_offset: OffsetHeader = None,
    content_length: LengthHeader = None,
) -> Response:
    """201 with the blob; 400 ``digest_mismatch`` stores nothing and ends the session.

    ``sha256``, ``blake3`` or both: each one given is checked.
    """
    session_id = _session_id(upload_id)
    has_body = bool(content_length) or "chunked" in request.headers.get("transfer-encoding", "")
    blob = await services.uploads.finalize(
        session_id,
        sha256=parse_digest(sha256, "sha256"),
        blake3=parse_digest(blake3, "blake3"),
        last_chunk=_body(request) if has_body else None,
        offset=_offset(upload_offset),
        actor=actor,
    )
    return JSONResponse(
        blob_json(blob),
        status_code=201,
        headers={"Location": f"/v1/blobs/{blob.sha256}"},
    )


@router.delete("/{upload_id}", status_code=204, summary="Abort a session")
async def abort_upload(upload_id: str, services: ServicesDep, _actor: ActorWrite) -> Response:
    """Remove the session and its staged bytes."""
    await services.uploads.abort(_session_id(upload_id))
    return Response(status_code=204)
