"""``/v1/packages``: publish, list, read, yank, delete; files of a version by path."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from artifactstore.api.schemas import (
    DeleteRequest,
    LabelQuery,
    YankRequest,
    package_json,
    version_json,
)
from artifactstore.api.services import ActorAdmin, ActorRead, ActorWrite, ServicesDep
from artifactstore.api.streaming import blob_response, read_capped
from artifactstore.errors import InvalidInputError, ManifestError
from artifactstore.manifest import decode_manifest, manifest_from_json, manifest_to_json
from artifactstore.names import validate_file_path, validate_package_name, validate_version

__all__ = ["router"]

router = APIRouter(prefix="/v1/packages", tags=["packages"])

MAX_MANIFEST_BYTES = 64 * 1024 * 1024
CBOR = "application/cbor"
Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(max_length=1024)]


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (the CBOR path refuses duplicates too)."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ManifestError(f"the JSON manifest names key {key[:64]!r} twice")
        seen.add(key)
    return dict(pairs)


@router.put(
    "/{name}/versions/{version}",
    status_code=201,
    summary="Publish a version from a manifest (canonical CBOR or JSON)",
)
async def publish(
    name: str,
    version: str,
    request: Request,
    services: ServicesDep,
    actor: ActorWrite,
    producer: LabelQuery = None,
    retention_class: LabelQuery = None,
) -> Response:
    """201 when new, 200 when the same manifest was published before, 409 on a different one."""
    validate_package_name(name)
    validate_version(version)
    body = await read_capped(request, MAX_MANIFEST_BYTES, "manifest")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    manifest: Any
    if content_type == CBOR:
        manifest = body
        parsed = decode_manifest(body)
    elif content_type in {"application/json", ""}:
        try:
            document = json.loads(body, object_pairs_hook=_unique_keys)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"body is not valid JSON: {exc}") from exc
        except RecursionError:
            raise ManifestError("body is JSON nested too deeply") from None
        parsed = manifest = manifest_from_json(document)
    else:
        raise InvalidInputError(f"Content-Type must be {CBOR} or application/json")
    if (parsed.package, parsed.version) != (name, version):
        raise ManifestError(
            f"manifest names {parsed.package} {parsed.version}, the URL {name} {version}"
        )
    result = await services.registry.publish(
        manifest, producer=producer, retention_class=retention_class, actor=actor
    )
    return JSONResponse(
        {
            "package": name,
            "version": version,
            "manifest_sha256": str(result.manifest_sha256),
            "created": result.created,
        },
        status_code=201 if result.created else 200,
        headers={"Location": f"/v1/packages/{name}/versions/{version}"},
    )


@router.get("", summary="List packages")
async def list_packages(
    services: ServicesDep, _actor: ActorRead, limit: Limit = 100, cursor: Cursor = None
) -> dict[str, Any]:
    """One page of packages by name."""
    page = await services.registry.packages(limit=limit, cursor=cursor)
    return {"items": [package_json(p) for p in page.items], "next_cursor": page.next_cursor}


@router.get("/{name}", summary="A package and a page of its versions")
async def get_package(
    name: str, services: ServicesDep, _actor: ActorRead, limit: Limit = 100, cursor: Cursor = None
) -> dict[str, Any]:
    """The package with one page of versions."""
    validate_package_name(name)
    package = await services.registry.package(name)
    page = await services.registry.versions(name, limit=limit, cursor=cursor)
    return {
        **package_json(package),
        "versions": [version_json(v) for v in page.items],
        "next_cursor": page.next_cursor,
    }


@router.get("/{name}/versions/{version}", summary="A version and its manifest")
async def get_version(
    name: str, version: str, request: Request, services: ServicesDep, _actor: ActorRead
) -> Response:
    """JSON with the manifest, or the canonical CBOR manifest for ``Accept: application/cbor``."""
    validate_package_name(name)
    validate_version(version)
    record = await services.registry.version(name, version)
    data = await services.registry.manifest_bytes(name, version)
    if CBOR in request.headers.get("accept", ""):
        return Response(
            data,
            media_type=CBOR,
            headers={"ETag": f'"{record.manifest_sha256.hex}"'},
        )
    return JSONResponse(
        {**version_json(record), "manifest": manifest_to_json(decode_manifest(data))},
        headers={"ETag": f'"{record.manifest_sha256.hex}"'},
    )


@router.get("/{name}/versions/{version}/files/{path:path}", summary="A file of a version")
@router.head(
    "/{name}/versions/{version}/files/{path:path}",
    summary="A file's headers",
    operation_id="head_file",
)
async def get_file(
    name: str,
    version: str,
    path: str,
    request: Request,
    services: ServicesDep,
    _actor: ActorRead,
) -> Response:
    """The file's bytes, with the same Range and digest headers as blobs."""
    validate_package_name(name)
    validate_version(version)
    validate_file_path(path)
    f = await services.registry.file(name, version, path)
    return await blob_response(
        request,
        services.registry,
        sha256=f.sha256,
        blake3=f.blake3,
        last_modified=f.published_at,
        media_type=f.media_type,
        filename=f.path,
    )


@router.post("/{name}/versions/{version}/yank", summary="Yank a version")
async def yank(
    name: str,
    version: str,
    services: ServicesDep,
    actor: ActorWrite,
    body: YankRequest | None = None,
) -> dict[str, Any]:
    """Mark the version yanked (idempotent); returns the version."""
    validate_package_name(name)
    validate_version(version)
    record = await services.registry.yank(
        name, version, reason=body.reason if body else "", actor=actor
    )
    return version_json(record)


@router.delete("/{name}/versions/{version}", status_code=204, summary="Delete a version (admin)")
async def delete_version(
    name: str,
    version: str,
    services: ServicesDep,
    actor: ActorAdmin,
    body: DeleteRequest | None = None,
) -> Response:
    """204; gone from every listing at once; 404 if absent or already deleted."""
    validate_package_name(name)
    validate_version(version)
    await services.registry.delete_version(
        name, version, reason=body.reason if body else "", actor=actor
    )
    return Response(status_code=204)


@router.delete("/{name}", summary="Delete every version of a package (admin)")
async def delete_package(
    name: str,
    services: ServicesDep,
    actor: ActorAdmin,
    body: DeleteRequest | None = None,
) -> dict[str, Any]:
    """``{package, deleted: [versions]}``, one event per version in one transaction."""
    validate_package_name(name)
    deleted = await services.registry.delete_package(
        name, reason=body.reason if body else "", actor=actor
    )
    return {"package": name, "deleted": deleted}
