"""``POST /v1/blobs`` and ``POST /v1/blobs/exists`` against the real app, PostgreSQL and disk."""

from __future__ import annotations

import contextlib
import dataclasses
import random
from typing import TYPE_CHECKING

import httpx
import pytest

from artifactstore.api.app import create_app
from artifactstore.digests import hash_bytes
from artifactstore.registry import Expected, Tokens
from artifactstore.registry.queries import held_blobs

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from artifactstore.config import Settings
    from artifactstore.registry import Registry

DATA = random.Random(10).randbytes(50_000)
D = hash_bytes(DATA)
OTHER = hash_bytes(b"never stored")


async def _event_types(api: httpx.AsyncClient) -> list[str]:
    return [e["type"] for e in (await api.get("/v1/events")).json()["items"]]


def _stored_objects(settings: Settings, sha_hex: str) -> list[str]:
    return [p.name for p in settings.data_dir.rglob(f"*{sha_hex}*") if p.is_file()]


@contextlib.asynccontextmanager
async def _client(
    settings: Settings, registry: Registry, token: str | None, host: str = "127.0.0.1"
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh app over ``registry`` (lifespan run), with ``token`` if given."""
    app = create_app(settings, registry=registry, host=host, bootstrap_token=False)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://x", headers=headers
        ) as client,
    ):
        yield client


async def test_post_blob_stores_then_answers_held(api: httpx.AsyncClient) -> None:
    """201 with both digests and a Location to read the bytes at; the same body again is 200."""
    r = await api.post(
        "/v1/blobs", params={"sha256": D.sha256.hex, "blake3": D.blake3.hex}, content=DATA
    )
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/v1/blobs/{D.sha256}"
    body = r.json()
    assert (body["sha256"], body["blake3"], body["size"]) == (
        str(D.sha256),
        str(D.blake3),
        len(DATA),
    )
    assert [loc["backend"] for loc in body["locations"]] == ["local"]
    read = await api.get(r.headers["location"])
    assert read.status_code == 200
    assert read.content == DATA
    again = await api.post("/v1/blobs", params={"blake3": str(D.blake3)}, content=DATA)
    assert again.status_code == 200, again.text
    assert again.json()["sha256"] == str(D.sha256)
    unnamed = await api.post("/v1/blobs", content=DATA)
    assert unnamed.status_code == 200
    assert (await _event_types(api)).count("v1.blob.stored") == 1


@pytest.mark.parametrize("algorithm", ["sha256", "blake3"])
async def test_wrong_digest_stores_nothing(
    api: httpx.AsyncClient, settings: Settings, algorithm: str
) -> None:
    """A digest the body does not match is 400 digest_mismatch: no object, no event, a 404."""
    wrong = getattr(OTHER, algorithm).hex
    r = await api.post("/v1/blobs", params={algorithm: wrong}, content=DATA)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "digest_mismatch"
    assert error["detail"]["expected"] == f"{algorithm}:{wrong}"
    assert error["detail"]["actual"] == str(getattr(D, algorithm))
    assert _stored_objects(settings, D.sha256.hex) == []
    assert await _event_types(api) == ["v1.token.created"]
    assert (await api.get(f"/v1/blobs/{D.sha256}")).status_code == 404


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_over_the_inline_limit_is_413(
    settings: Settings, registry: Registry, admin_token: str, chunked: bool
) -> None:
    """A body past uploads.max_inline_bytes, declared or chunked, is 413; nothing is stored."""
    small = dataclasses.replace(
        settings, uploads=dataclasses.replace(settings.uploads, max_inline_bytes=len(DATA) - 1)
    )

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(DATA), 4096):
            yield DATA[start : start + 4096]

    async with _client(small, registry, admin_token) as api:
        r = await api.post("/v1/blobs", content=pieces() if chunked else DATA)
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "too_large"
        assert (await api.get(f"/v1/blobs/{D.sha256}")).status_code == 404
        assert await _event_types(api) == ["v1.token.created"]
        fits = await api.post("/v1/blobs", content=DATA[:-1])
        assert fits.status_code == 201, fits.text
    assert _stored_objects(settings, D.sha256.hex) == []


async def test_post_needs_write_scope_exists_needs_read(
    settings: Settings, registry: Registry
) -> None:
    """Storing needs a write token; the existence look-up needs what GET /v1/blobs needs."""
    tokens = Tokens(registry.engine)
    reader = await tokens.create("reader", "read", actor="test")
    writer = await tokens.create("writer", "write", actor="test")
    query = {"blobs": [{"sha256": D.sha256.hex}]}
    async with _client(settings, registry, None, host="0.0.0.0") as anonymous:  # noqa: S104
        assert (await anonymous.post("/v1/blobs", content=DATA)).status_code == 401
        assert (await anonymous.post("/v1/blobs/exists", json=query)).status_code == 401
    async with _client(settings, registry, reader, host="0.0.0.0") as read_only:  # noqa: S104
        refused = await read_only.post("/v1/blobs", content=DATA)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"
        assert (await read_only.post("/v1/blobs/exists", json=query)).json() == {"blobs": [None]}
    async with _client(settings, registry, writer, host="0.0.0.0") as write:  # noqa: S104
        assert (await write.post("/v1/blobs", content=DATA)).status_code == 201
    async with _client(settings, registry, reader, host="0.0.0.0") as read_only:  # noqa: S104
        held = (await read_only.post("/v1/blobs/exists", json=query)).json()["blobs"]
        assert held[0]["sha256"] == str(D.sha256)


async def test_exists_answers_in_order_with_nulls(api: httpx.AsyncClient) -> None:
    """Entries by sha256, blake3 or both answer in order; unknown or mismatched ones are null."""
    second = random.Random(11).randbytes(100)
    d2 = hash_bytes(second)
    for data in (DATA, second):
        assert (await api.post("/v1/blobs", content=data)).status_code == 201
    entries = [
        {"blake3": d2.blake3.hex},
        {"sha256": OTHER.sha256.hex},
        {"sha256": D.sha256.hex},
        {"sha256": str(D.sha256), "blake3": str(D.blake3)},
        {"sha256": D.sha256.hex, "blake3": d2.blake3.hex},
        {"blake3": OTHER.blake3.hex},
        {"blake3": f"blake3:{D.blake3.hex}"},
    ]
    r = await api.post("/v1/blobs/exists", json={"blobs": entries})
    assert r.status_code == 200, r.text
    one = {"sha256": str(D.sha256), "blake3": str(D.blake3), "size": len(DATA)}
    two = {"sha256": str(d2.sha256), "blake3": str(d2.blake3), "size": len(second)}
    assert r.json() == {"blobs": [two, None, one, one, None, None, one]}


async def test_exists_counts_only_copies_on_every_target(registry: Registry) -> None:
    """A blob held on one backend is not held for routes that also name another."""
    await registry.put_small(DATA)
    wanted = [Expected(sha256=D.sha256), Expected(blake3=D.blake3, size=len(DATA) + 1)]
    async with registry.engine.connect() as conn:
        assert await held_blobs(conn, wanted, ["local"]) == [D, None]
        assert await held_blobs(conn, wanted, ["local", "elsewhere"]) == [None, None]


@pytest.mark.parametrize(
    "body",
    [
        {"blobs": []},
        {"blobs": [{"sha256": D.sha256.hex}] * 1001},
        {"blobs": [{}]},
        {"blobs": [{"sha256": "zz"}]},
        {"blobs": [{"sha256": D.sha256.hex.upper()}]},
        {"blobs": [{"blake3": f"sha256:{D.blake3.hex}"}]},
        {"blobs": [{"sha256": D.sha256.hex, "size": 3}]},
        {"blobs": "all"},
        {"blobs": [{"sha256": D.sha256.hex}], "producer": "bad name"},
        {},
    ],
    ids=[
        "empty",
        "1001",
        "no-digest",
        "short-hex",
        "upper-hex",
        "wrong-prefix",
        "unknown-key",
        "not-a-list",
        "bad-producer",
        "no-blobs",
    ],
)
async def test_exists_refuses_malformed_requests(
    api: httpx.AsyncClient, body: dict[str, object]
) -> None:
    """A malformed exists request is 400 invalid_request with the JSON error body."""
    r = await api.post("/v1/blobs/exists", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(
    "params",
    [{"sha256": "abc"}, {"blake3": "g" * 64}, {"sha256": "s" * 200}, {"producer": "no spaces"}],
)
async def test_post_blob_refuses_bad_parameters(
    api: httpx.AsyncClient, settings: Settings, params: dict[str, str]
) -> None:
    """Malformed digests or labels are a 400 JSON error before anything is stored."""
    r = await api.post("/v1/blobs", params=params, content=DATA)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] in {"invalid_digest", "invalid_request"}
    assert _stored_objects(settings, D.sha256.hex) == []
