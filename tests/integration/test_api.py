"""The REST API against the real app, a real PostgreSQL and a real local backend."""

from __future__ import annotations

import base64
import json
import random
from typing import TYPE_CHECKING

import httpx
import pytest

from artifactstore.api.app import create_app
from artifactstore.digests import hash_bytes
from artifactstore.manifest import ManifestFile, build_manifest, encode_manifest
from artifactstore.registry import Tokens

if TYPE_CHECKING:
    from artifactstore.config import Settings
    from artifactstore.registry import Registry

DATA = random.Random(3).randbytes(200_000)
D = hash_bytes(DATA)


async def _upload(api: httpx.AsyncClient, data: bytes, chunk: int = 64_000) -> dict[str, object]:
    d = hash_bytes(data)
    created = await api.post("/v1/uploads", json={"size": len(data)})
    assert created.status_code == 201, created.text
    location = created.headers["location"]
    offset = 0
    while offset < len(data):
        part = data[offset : offset + chunk]
        r = await api.patch(location, content=part, headers={"Upload-Offset": str(offset)})
        assert r.status_code == 204, r.text
        offset = int(r.headers["upload-offset"])
    done = await api.put(location, params={"sha256": d.sha256.hex, "blake3": d.blake3.hex})
    assert done.status_code == 201, done.text
    result: dict[str, object] = done.json()
    return result


def _manifest_json(package: str, version: str, files: dict[str, bytes]) -> dict[str, object]:
    entries = []
    for path, data in files.items():
        d = hash_bytes(data)
        entries.append(
            {"path": path, "size": d.size, "sha256": str(d.sha256), "blake3": str(d.blake3)}
        )
    return {"package": package, "version": version, "files": entries}


async def test_chunked_upload_session_round_trip(api: httpx.AsyncClient) -> None:
    """Create, PATCH in chunks, finalize: the blob reads back byte for byte with its headers."""
    blob = await _upload(api, DATA)
    assert blob["sha256"] == str(D.sha256)
    r = await api.get(f"/v1/blobs/{D.sha256}")
    assert r.status_code == 200
    assert r.content == DATA
    assert r.headers["etag"] == f'"{D.sha256.hex}"'
    assert r.headers["x-blake3"] == D.blake3.hex
    assert r.headers["repr-digest"] == f"sha-256=:{base64.b64encode(D.sha256.raw).decode()}:"


async def test_known_blob_shortcut_skips_the_session(api: httpx.AsyncClient) -> None:
    """POST with the sha256 of a held blob answers 200 exists and opens no session."""
    await _upload(api, DATA)
    r = await api.post("/v1/uploads", json={"sha256": D.sha256.hex, "size": len(DATA)})
    assert r.status_code == 200
    assert r.json()["status"] == "exists"
    assert r.json()["blake3"] == str(D.blake3)


async def test_blake3_alone_names_a_blob(api: httpx.AsyncClient) -> None:
    """blake3 alone finds a held blob at create and is enough to finalize.

    The server computes sha256 itself and answers with it; a create whose two
    digests disagree with the held blob opens a session instead of claiming it.
    """
    other = random.Random(4).randbytes(70_000)
    o = hash_bytes(other)
    location = (await api.post("/v1/uploads", json={"blake3": str(o.blake3)})).headers["location"]
    await api.patch(location, content=other, headers={"Upload-Offset": "0"})
    done = await api.put(location, params={"blake3": o.blake3.hex})
    assert done.status_code == 201, done.text
    assert done.json()["sha256"] == str(o.sha256)

    r = await api.post("/v1/uploads", json={"blake3": o.blake3.hex, "size": len(other)})
    assert r.status_code == 200
    assert r.json()["status"] == "exists"
    assert r.json()["sha256"] == str(o.sha256)

    wrong_pair = {"sha256": o.sha256.hex, "blake3": D.blake3.hex}
    assert (await api.post("/v1/uploads", json=wrong_pair)).status_code == 201

    location = (await api.post("/v1/uploads", json={})).headers["location"]
    await api.patch(location, content=b"abc", headers={"Upload-Offset": "0"})
    r = await api.put(location)
    assert r.status_code == 400
    assert "sha256 or the blake3" in r.json()["error"]["message"]
    assert (await api.head(location)).headers["upload-offset"] == "3"  # the session stays
    r = await api.put(location, params={"blake3": D.blake3.hex})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "digest_mismatch"


async def test_wrong_offset_is_409_with_the_current_offset(api: httpx.AsyncClient) -> None:
    """A PATCH at the wrong offset changes nothing and reports where to resume."""
    location = (await api.post("/v1/uploads", json={})).headers["location"]
    await api.patch(location, content=b"abcd", headers={"Upload-Offset": "0"})
    r = await api.patch(location, content=b"zz", headers={"Upload-Offset": "2"})
    assert r.status_code == 409
    assert r.headers["upload-offset"] == "4"
    assert r.json()["error"]["code"] == "offset_mismatch"
    assert r.json()["error"]["detail"]["offset"] == 4
    head = await api.head(location)
    assert head.headers["upload-offset"] == "4"


async def test_digest_mismatch_stores_nothing(api: httpx.AsyncClient, registry: Registry) -> None:
    """Finalizing with a wrong sha256 is 400 digest_mismatch; no blob and no event."""
    location = (await api.post("/v1/uploads", json={})).headers["location"]
    await api.patch(location, content=DATA, headers={"Upload-Offset": "0"})
    wrong = hash_bytes(b"something else").sha256.hex
    r = await api.put(location, params={"sha256": wrong})
    assert r.status_code == 400
    body = r.json()["error"]
    assert body["code"] == "digest_mismatch"
    assert body["detail"]["expected"] == f"sha256:{wrong}"
    assert body["detail"]["actual"] == str(D.sha256)
    assert (await api.get(f"/v1/blobs/{D.sha256}")).status_code == 404
    events = (await api.get("/v1/events")).json()["items"]
    assert [e["type"] for e in events] == ["v1.token.created"]
    assert (await api.head(location)).status_code == 404
    assert [p.name for p in registry.staging.root.iterdir()] == []


async def test_last_chunk_can_ride_on_finalize(api: httpx.AsyncClient) -> None:
    """PUT with a body appends it as the last chunk before verifying."""
    location = (await api.post("/v1/uploads", json={"size": len(DATA)})).headers["location"]
    await api.patch(location, content=DATA[:1000], headers={"Upload-Offset": "0"})
    r = await api.put(
        location,
        params={"sha256": D.sha256.hex, "blake3": D.blake3.hex},
        content=DATA[1000:],
        headers={"Upload-Offset": "1000"},
    )
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/v1/blobs/{D.sha256}"


async def test_abort_and_unknown_sessions(api: httpx.AsyncClient) -> None:
    """DELETE ends a session; unknown and malformed ids are 404 and 400."""
    location = (await api.post("/v1/uploads", json={})).headers["location"]
    assert (await api.delete(location)).status_code == 204
    assert (
        await api.patch(location, content=b"x", headers={"Upload-Offset": "0"})
    ).status_code == 404
    assert (await api.delete(location)).status_code == 404
    assert (await api.head("/v1/uploads/not-a-uuid")).status_code == 400


async def test_limits_answer_413(tmp_path: object, settings: Settings, registry: Registry) -> None:
    """A declared size or a chunk beyond the configured limits is refused with 413."""
    import dataclasses  # noqa: PLC0415

    small = dataclasses.replace(
        settings, uploads=dataclasses.replace(settings.uploads, max_blob_bytes=1000)
    )
    registry.settings = small
    token = await Tokens(registry.engine).create("t", "write", actor="test")
    app = create_app(small, registry=registry, host="127.0.0.1", bootstrap_token=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://127.0.0.1",
            headers={"Authorization": f"Bearer {token}"},
        ) as api,
    ):
        r = await api.post("/v1/uploads", json={"size": 1001})
        assert r.status_code == 413
        location = (await api.post("/v1/uploads", json={})).headers["location"]
        r = await api.patch(location, content=b"x" * 1001, headers={"Upload-Offset": "0"})
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "too_large"


@pytest.mark.parametrize(
    ("header", "status", "body"),
    [
        ("bytes=0-0", 206, DATA[:1]),
        ("bytes=-1", 206, DATA[-1:]),
        (f"bytes={len(DATA) - 1}-", 206, DATA[-1:]),
        ("bytes=10-19", 206, DATA[10:20]),
        (f"bytes=100-{len(DATA) + 50}", 206, DATA[100:]),
        (f"bytes={len(DATA)}-", 416, b""),
    ],
)
async def test_blob_ranges(api: httpx.AsyncClient, header: str, status: int, body: bytes) -> None:
    """Range reads answer 206 with the exact bytes, or 416 past the end."""
    await _upload(api, DATA)
    r = await api.get(f"/v1/blobs/{D.sha256}", headers={"Range": header})
    assert r.status_code == status
    if status == 206:
        assert r.content == body
        assert r.headers["content-range"].endswith(f"/{len(DATA)}")
    else:
        assert r.json()["error"]["code"] == "invalid_range"
        assert r.headers["content-range"] == f"bytes */{len(DATA)}"


async def test_conditional_get_and_head(api: httpx.AsyncClient) -> None:
    """If-None-Match with the ETag is 304; HEAD has headers and no body."""
    await _upload(api, DATA)
    etag = f'"{D.sha256.hex}"'
    r = await api.get(f"/v1/blobs/{D.sha256}", headers={"If-None-Match": etag})
    assert r.status_code == 304
    head = await api.head(f"/v1/blobs/{D.sha256}")
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(DATA))
    assert head.content == b""
    assert (await api.get("/v1/blobs/sha256:xyz")).status_code == 400


async def test_publish_json_cbor_conflict_and_missing(api: httpx.AsyncClient) -> None:
    """Publishing: 201 new, 200 same, 409 different, 422 missing blobs, 400 non-canonical."""
    await _upload(api, DATA)
    doc = _manifest_json("demo", "1.0.0", {"bin/app": DATA})
    r = await api.put("/v1/packages/demo/versions/1.0.0", json=doc)
    assert r.status_code == 201, r.text
    digest = r.json()["manifest_sha256"]
    assert (await api.put("/v1/packages/demo/versions/1.0.0", json=doc)).status_code == 200
    manifest = build_manifest(
        "demo", "1.0.0", [ManifestFile("bin/app", D.size, D.sha256, D.blake3)]
    )
    cbor = encode_manifest(manifest)
    r = await api.put(
        "/v1/packages/demo/versions/1.0.0",
        content=cbor,
        headers={"Content-Type": "application/cbor"},
    )
    assert r.status_code == 200
    assert r.json()["manifest_sha256"] == digest
    other = _manifest_json("demo", "1.0.0", {"bin/other": DATA})
    r = await api.put("/v1/packages/demo/versions/1.0.0", json=other)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "version_conflict"
    missing = _manifest_json("demo", "2.0.0", {"a": b"not uploaded"})
    r = await api.put("/v1/packages/demo/versions/2.0.0", json=missing)
    assert r.status_code == 422
    assert r.json()["error"]["detail"]["missing"] == [str(hash_bytes(b"not uploaded").sha256)]
    # A non-shortest length for the 6-character "schema" key makes it non-canonical.
    bad = bytearray(cbor)
    at = bad.index(b"\x66schema")
    bad[at : at + 1] = b"\x78\x06"
    r = await api.put(
        "/v1/packages/demo/versions/1.0.0",
        content=bytes(bad),
        headers={"Content-Type": "application/cbor"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "non_canonical_cbor"
    r = await api.put("/v1/packages/demo/versions/9.9.9", json=doc)
    assert r.status_code == 400
    r = await api.put(
        "/v1/packages/demo/versions/3.0",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400


async def test_reading_packages_versions_and_files(api: httpx.AsyncClient) -> None:
    """Lists paginate by cursor; a version comes as JSON or CBOR; files stream by path."""
    await _upload(api, DATA)
    for name in ("alpha", "beta", "gamma"):
        doc = _manifest_json(name, "1.0", {"dir/ünïcode file.bin": DATA})
        assert (await api.put(f"/v1/packages/{name}/versions/1.0", json=doc)).status_code == 201
    page1 = (await api.get("/v1/packages", params={"limit": 2})).json()
    assert [p["name"] for p in page1["items"]] == ["alpha", "beta"]
    page2 = (
        await api.get("/v1/packages", params={"limit": 2, "cursor": page1["next_cursor"]})
    ).json()
    assert [p["name"] for p in page2["items"]] == ["gamma"]
    assert page2["next_cursor"] is None
    assert (await api.get("/v1/packages", params={"cursor": "garbage!"})).status_code == 400
    pkg = (await api.get("/v1/packages/beta")).json()
    assert [v["version"] for v in pkg["versions"]] == ["1.0"]
    version = (await api.get("/v1/packages/beta/versions/1.0")).json()
    assert version["manifest"]["files"][0]["path"] == "dir/ünïcode file.bin"
    cbor = await api.get("/v1/packages/beta/versions/1.0", headers={"Accept": "application/cbor"})
    assert hash_bytes(cbor.content).sha256.hex == version["manifest_sha256"].split(":")[1]
    f = await api.get("/v1/packages/beta/versions/1.0/files/dir/ünïcode file.bin")
    assert f.content == DATA
    assert (await api.get("/v1/packages/beta/versions/1.0/files/nope")).status_code == 404
    assert (await api.get("/v1/packages/beta/versions/1.0/files/../x")).status_code in {400, 404}
    assert (await api.get("/v1/packages/nope")).status_code == 404
    y = await api.post("/v1/packages/beta/versions/1.0/yank", json={"reason": "bad build"})
    assert y.json()["yanked"] is True
    assert (
        await api.get("/v1/packages/beta/versions/1.0/files/dir/ünïcode file.bin")
    ).status_code == 200


async def test_tokens_scopes_and_anonymous_reads(
    settings: Settings, registry: Registry, api: httpx.AsyncClient
) -> None:
    """Writes need a write token; reads, metrics included, are anonymous on loopback only."""
    reader = await Tokens(registry.engine).create("reader", "read", actor="test")
    anonymous = dict(api.headers)
    anonymous.pop("authorization")
    r = await api.post("/v1/uploads", json={}, headers={"Authorization": ""})
    assert r.status_code == 401
    r = await api.post("/v1/uploads", json={}, headers={"Authorization": f"Bearer {reader}"})
    assert r.status_code == 403
    r = await api.post("/v1/uploads", json={}, headers={"Authorization": "Bearer ast_bogus"})
    assert r.status_code == 401
    app = create_app(settings, registry=registry, host="0.0.0.0", bootstrap_token=False)  # noqa: S104
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as remote,
    ):
        assert (await remote.get("/v1/packages")).status_code == 401
        ok = await remote.get("/v1/packages", headers={"Authorization": f"Bearer {reader}"})
        assert ok.status_code == 200
        assert (await remote.get("/healthz")).status_code == 200
        assert (await remote.get("/metrics")).status_code == 401
        scraped = await remote.get("/metrics", headers={"Authorization": f"Bearer {reader}"})
        assert scraped.status_code == 200
        assert "artifactstore_http_requests_total" in scraped.text


async def test_events_storage_health_and_metrics(api: httpx.AsyncClient) -> None:
    """Events page by seq; storage, readiness and metrics describe the registry."""
    await _upload(api, DATA)
    events = (await api.get("/v1/events", params={"after": 0, "limit": 10})).json()
    types = [e["type"] for e in events["items"]]
    assert types == ["v1.token.created", "v1.blob.stored"]
    assert events["items"][1]["payload"]["sha256"] == str(D.sha256)
    after = (await api.get("/v1/events", params={"after": events["next_after"]})).json()
    assert after["items"] == []
    storage = (await api.get("/v1/storage")).json()["backends"]
    assert storage[0]["name"] == "local"
    assert storage[0]["locations"]["stored"] == 1
    ready = await api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ok"
    metrics = (await api.get("/metrics")).text
    assert 'artifactstore_storage_locations{backend="local",state="stored"} 1.0' in metrics
    assert "artifactstore_http_requests_total" in metrics
    assert (await api.get("/openapi.json")).status_code == 200


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("POST", "/v1/uploads", b"[1,2"),
        ("POST", "/v1/uploads", json.dumps({"size": -1}).encode()),
        ("POST", "/v1/uploads", json.dumps({"sha256": "zz"}).encode()),
        ("POST", "/v1/uploads", json.dumps({"unknown": 1}).encode()),
        ("PATCH", "/v1/uploads/00000000-0000-0000-0000-000000000000", b"x"),
        ("PUT", "/v1/uploads/00000000-0000-0000-0000-000000000000?sha256=abc", b""),
        ("PUT", "/v1/packages/Bad Name/versions/1", b"{}"),
        ("PUT", "/v1/packages/ok/versions/1", b"\xff\xfe"),
        ("GET", "/v1/events?after=-5", b""),
        ("GET", "/v1/packages?limit=100000", b""),
        ("GET", "/v1/events?after=99999999999999999999", b""),
        ("GET", "/v1/packages/%00", b""),
        ("GET", "/v1/packages/ok/versions/%00", b""),
        ("GET", "/v1/packages?cursor=WyJcdTAwMDAiXQ", b""),
        ("PATCH", "/v1/uploads/00000000-0000-0000-0000-000000000000", b""),
    ],
)
async def test_bad_input_is_a_4xx_never_a_500(
    api: httpx.AsyncClient, method: str, url: str, body: bytes
) -> None:
    """Malformed requests get a JSON error in the 4xx range."""
    r = await api.request(method, url, content=body, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    assert "code" in r.json()["error"]


@pytest.mark.parametrize("value", ["²", "1" * 30, "9223372036854775808", "-1", "12a", "1" * 5000])
async def test_a_bad_last_event_id_is_a_400_before_the_stream(
    api: httpx.AsyncClient, value: str
) -> None:
    response = await api.get("/v1/events/stream", headers={b"Last-Event-ID": value.encode()})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_input"


@pytest.mark.parametrize("depth", [1_000, 100_000])
async def test_deeply_nested_json_is_a_400(api: httpx.AsyncClient, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    manifest = (
        '{"schema": 1, "package": "deep", "version": "1", "files": [],'
        f' "annotations": {{"a": {nested}}}}}'
    )
    published = await api.put(
        "/v1/packages/deep/versions/1",
        content=manifest,
        headers={"Content-Type": "application/json"},
    )
    assert published.status_code == 400, published.text
    assert "nested too deeply" in published.json()["error"]["message"]
    created = await api.post(
        "/v1/uploads", content=f'{{"size": {nested}}}', headers={"Content-Type": "application/json"}
    )
    assert created.status_code == 400, created.text
    assert created.json()["error"]["code"] in {"invalid_request", "invalid_input"}


@pytest.mark.parametrize("offset", ["+0", "0x0", "1_0", "-1", "1e3", "99999999999999999999"])
async def test_upload_offset_is_digits_only(api: httpx.AsyncClient, offset: str) -> None:
    location = (await api.post("/v1/uploads", json={})).headers["location"]
    patched = await api.patch(location, content=b"x", headers={"Upload-Offset": offset})
    assert patched.status_code == 400, patched.text
    assert (await api.head(location)).headers["upload-offset"] == "0"


async def test_a_json_manifest_with_a_key_twice_is_refused(api: httpx.AsyncClient) -> None:
    manifest = (
        '{"schema": 1, "package": "dup", "version": "1", "files": [],'
        ' "annotations": {"a": "1", "a": "2"}}'
    )
    published = await api.put(
        "/v1/packages/dup/versions/1",
        content=manifest,
        headers={"Content-Type": "application/json"},
    )
    assert published.status_code == 400, published.text
    assert "twice" in published.json()["error"]["message"]


async def test_a_path_with_a_bidi_override_is_refused(api: httpx.AsyncClient) -> None:
    """A file path holding U+202E (RIGHT-TO-LEFT OVERRIDE) is refused with 400, naming it."""
    manifest = _manifest_json("spoof", "1", {"invoice\u202efdp.exe": b"x"})
    published = await api.put("/v1/packages/spoof/versions/1", json=manifest)
    assert published.status_code == 400, published.text
    error = published.json()["error"]
    assert error["code"] == "invalid_name"
    assert "files[0].path" in error["message"]
    assert "RIGHT-TO-LEFT OVERRIDE" in error["message"]


@pytest.mark.parametrize(
    ("raised", "status", "code"),
    [
        (RuntimeError("a bug"), 500, "internal_error"),
        (OSError(28, "No space left on device"), 507, "insufficient_storage"),
        (TimeoutError(), 503, "unavailable"),
    ],
)
async def test_an_unforeseen_error_is_answered_as_json(
    settings: Settings, registry: Registry, raised: Exception, status: int, code: str
) -> None:
    """An exception no handler expects is the JSON error shape (logged), never text/plain."""
    app = create_app(settings, registry=registry, host="127.0.0.1", bootstrap_token=False)

    async def broken() -> None:
        raise raised

    app.add_api_route("/broken", broken)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            answer = await client.get("/broken")
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code
