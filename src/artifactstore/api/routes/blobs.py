"""``/v1/blobs/sha256:<hex>``: blob bytes with Range, conditionals and digest headers."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from artifactstore.api.schemas import blob_json
from artifactstore.api.services import ActorRead, ServicesDep
from artifactstore.api.streaming import blob_response
from artifactstore.digests import Digest

__all__ = ["router"]

router = APIRouter(prefix="/v1/blobs", tags=["blobs"])


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
