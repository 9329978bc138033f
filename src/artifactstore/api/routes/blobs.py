"""``/v1/blobs``: blob bytes (Range, conditionals, digest headers); small blobs in one request.

Reads: ``GET``/``HEAD /v1/blobs/sha256:<hex>`` and ``.../info`` (DESIGN section 5).
Small blobs (DESIGN section 10): ``POST /v1/blobs`` stores a body of at most
``uploads.max_inline_bytes`` without a session; ``POST /v1/blobs/exists``
says which of up to 1,000 blobs are held, in one look-up.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from artifactstore.api.schemas import (
    ExistsRequest,
    LabelQuery,
    blob_json,
    digests_json,
    parse_digest,
)
from artifactstore.api.services import ActorRead, ActorWrite, ServicesDep
from artifactstore.api.streaming import blob_response, read_capped
from artifactstore.digests import Digest
from artifactstore.registry import Expected

__all__ = ["router"]

router = APIRouter(prefix="/v1/blobs", tags=["blobs"])

DigestQuery = Annotated[str | None, Query(max_length=71)]
# The body is the blob's bytes; declared so the OpenAPI document (and clients) know it.
_RAW_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post(
    "",
    status_code=201,
    summary="Store a small blob in one request",
    openapi_extra=_RAW_BODY,
    responses={200: {"description": "Already held"}, 413: {"description": "Body too large"}},
)
async def post_blob(
    request: Request,
    services: ServicesDep,
    actor: ActorWrite,
    sha256: DigestQuery = None,
    blake3: DigestQuery = None,
    producer: LabelQuery = None,
    retention_class: LabelQuery = None,
) -> Response:
    """201 with the blob when stored now, 200 when already held; 400 ``digest_mismatch``, 413.

    ``sha256``, ``blake3`` or both, when given, are checked against the body
    before anything is stored.
    """
    expected = Expected(parse_digest(sha256, "sha256"), parse_digest(blake3, "blake3"))
    limit = services.settings.uploads.max_inline_bytes
    data = await read_capped(request, limit, "a blob sent in one request (use an upload session)")
    blob, created = await services.registry.put_small(
        data,
        expected=expected,
        producer=producer,
        retention_class=retention_class,
        actor=actor,
    )
    return JSONResponse(
        blob_json(blob),
        status_code=201 if created else 200,
        headers={"Location": f"/v1/blobs/{blob.sha256}"},
    )


@router.post("/exists", summary="Which of these blobs are held (up to 1,000)")
async def blobs_exist(
    body: ExistsRequest, services: ServicesDep, _actor: ActorRead
) -> dict[str, list[dict[str, Any] | None]]:
    """``{"blobs": [...]}`` in request order: each blob held on its routed backends, or null."""
    wanted = [
        Expected(parse_digest(ref.sha256, "sha256"), parse_digest(ref.blake3, "blake3"))
        for ref in body.blobs
    ]
    found = await services.registry.held_blobs(
        wanted, producer=body.producer, retention_class=body.retention_class
    )
    return {"blobs": [None if d is None else digests_json(d) for d in found]}


@router.get("/{digest}", summary="Read a blob")
@router.head("/{digest}", summary="A blob's headers", operation_id="head_blob")
async def get_blob(
    digest: str, request: Request, services: ServicesDep, _actor: ActorRead
) -> Response:
    """The blob's bytes (200/206), or 304/412 for conditionals, 416 for bad ranges."""
    sha = Digest.parse(digest, algorithm="sha256")
    blob = await services.registry.blob(sha)
    return await blob_response(
        request,
        services.registry,
        sha256=blob.sha256,
        blake3=blob.blake3,
        last_modified=blob.stored_at,
    )


@router.get("/{digest}/info", summary="A blob's digests and copies")
async def blob_info(digest: str, services: ServicesDep, _actor: ActorRead) -> dict[str, object]:
    """JSON: both digests, size, and each copy's backend and state."""
    blob = await services.registry.blob(Digest.parse(digest, algorithm="sha256"))
    return blob_json(blob)
