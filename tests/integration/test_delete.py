"""Deleting versions and packages over REST, on a real PostgreSQL and a real local backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from artifactstore.digests import hash_bytes
from artifactstore.errors import VersionDeletedError
from artifactstore.manifest import ManifestFile, build_manifest, encode_manifest
from artifactstore.registry import Tokens
from artifactstore.registry.rebuild import rebuild_views

if TYPE_CHECKING:
    import httpx

    from artifactstore.registry import Registry


async def _publish(registry: Registry, package: str, version: str, data: bytes) -> bytes:
    """Publish one file ``f.bin`` holding ``data``; return the canonical manifest."""
    await registry.ingest_bytes(data)
    d = hash_bytes(data)
    files = [ManifestFile(path="f.bin", size=d.size, sha256=d.sha256, blake3=d.blake3)]
    manifest = encode_manifest(build_manifest(package, version, files, {}))
    assert (await registry.publish(manifest)).created
    return manifest


async def test_delete_version_over_rest(registry: Registry, api: httpx.AsyncClient) -> None:
    """204, then 404 everywhere (listing, version, manifest, file, a second DELETE); blobs stay."""
    await _publish(registry, "app", "1", b"one" * 100)
    await _publish(registry, "app", "2", b"two" * 100)
    r = await api.request("DELETE", "/v1/packages/app/versions/1", json={"reason": "bad build"})
    assert r.status_code == 204, r.text
    listed = (await api.get("/v1/packages/app")).json()
    assert [v["version"] for v in listed["versions"]] == ["2"]
    assert listed["version_count"] == 1
    cbor = {"Accept": "application/cbor"}
    assert (await api.get("/v1/packages/app/versions/1", headers=cbor)).status_code == 404
    assert (await api.head("/v1/packages/app/versions/1/files/f.bin")).status_code == 404
    for path in ("", "/files/f.bin"):
        gone = await api.get(f"/v1/packages/app/versions/1{path}")
        assert gone.status_code == 404, path
        assert gone.json()["error"]["code"] == "version_not_found", path
    again = await api.delete("/v1/packages/app/versions/1")
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "version_not_found"
    assert (await api.get(f"/v1/blobs/{hash_bytes(b'one' * 100).sha256}")).status_code == 200
    assert (await api.delete("/v1/packages/app/versions/9")).status_code == 404


async def test_deleted_name_is_never_published_again(
    registry: Registry, api: httpx.AsyncClient
) -> None:
    """The same manifest again is 409 version_deleted (REST) and VersionDeletedError (Python)."""
    manifest = await _publish(registry, "app", "1", b"one" * 100)
    assert (await api.delete("/v1/packages/app/versions/1")).status_code == 204
    r = await api.put(
        "/v1/packages/app/versions/1",
        content=manifest,
        headers={"Content-Type": "application/cbor"},
    )
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "version_deleted"
    with pytest.raises(VersionDeletedError):
        await registry.publish(manifest)


async def test_delete_needs_admin_and_a_short_reason(
    registry: Registry, api: httpx.AsyncClient
) -> None:
    """A write token gets 403; a reason over 1,000 characters or an unknown key gets 400."""
    await _publish(registry, "app", "1", b"one" * 100)
    writer = await Tokens(registry.engine).create("writer", "write", actor="test")
    r = await api.delete(
        "/v1/packages/app/versions/1", headers={"Authorization": f"Bearer {writer}"}
    )
    assert r.status_code == 403
    for body in ({"reason": "x" * 1001}, {"why": "x"}, {"reason": 5}):
        r = await api.request("DELETE", "/v1/packages/app/versions/1", json=body)
        assert r.status_code == 400, body
        assert r.json()["error"]["code"] == "invalid_request", body
    assert (await api.get("/v1/packages/app/versions/1")).status_code == 200


async def test_delete_package_and_replay(registry: Registry, api: httpx.AsyncClient) -> None:
    """Every live version goes in one transaction; a replay reproduces the deletes exactly."""
    for version in ("1", "2", "3"):
        await _publish(registry, "app", version, version.encode() * 100)
    assert (await api.delete("/v1/packages/app/versions/2")).status_code == 204
    r = await api.request("DELETE", "/v1/packages/app", json={"reason": "retired"})
    assert r.status_code == 200, r.text
    assert r.json() == {"package": "app", "deleted": ["1", "3"]}
    listed = (await api.get("/v1/packages/app")).json()
    assert (listed["versions"], listed["version_count"]) == ([], 0)
    events = (await api.get("/v1/events", params={"after": 0})).json()["items"]
    deleted = [e for e in events if e["type"] == "v1.package.deleted"]
    assert [e["payload"]["version"] for e in deleted] == ["2", "1", "3"]
    assert deleted[1]["payload"]["reason"] == "retired"
    assert deleted[1]["seq"] + 1 == deleted[2]["seq"]
    assert (await api.delete("/v1/packages/nope")).status_code == 404
    report = await rebuild_views(registry.engine, check=True)
    assert not report.differ
