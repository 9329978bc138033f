"""The gateway's S3 protocol edges: addressing, auth policy, errors, tokens, listing cost."""

from __future__ import annotations

import dataclasses
import importlib
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx
import pytest
from tests.gateway.support import ACCESS_KEY, SECRET_KEY

from artifactstore.config import GatewaySettings
from artifactstore.gateway.app import create_gateway_app
from artifactstore.gateway.listing import list_page
from artifactstore.gateway.sigv4 import sign_request
from artifactstore.registry import Registry

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from tests.gateway.support import DataSet

    from artifactstore.config import Settings
    from artifactstore.registry.records import FileRecord


def _signed(url: str, host: str, method: str = "GET") -> dict[str, str]:
    parsed = httpx.URL(url)
    pairs = sign_request(
        method,
        parsed.raw_path.decode().split("?")[0],
        parsed.query.decode(),
        {"host": host},
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        now=datetime.now(UTC),
    )
    return dict(pairs)


def test_virtual_host_addressing(gateway_url: str, dataset: DataSet) -> None:
    """``Host: demo.s3.localhost`` and ``demo.localhost`` address the bucket (signed and not)."""
    port = httpx.URL(gateway_url).port
    for host in (f"demo.s3.localhost:{port}", f"demo.localhost:{port}"):
        url = f"{gateway_url}/1.0.0/README.md"
        got = httpx.get(url, headers=_signed(url, host))
        assert got.status_code == 200, got.text
        assert got.content == dataset.objects[("demo", "1.0.0/README.md")]
        listing = httpx.get(f"{gateway_url}/?list-type=2&prefix=2.0.0/", headers={"host": host})
        assert "<Key>2.0.0/big.bin</Key>" in listing.text


def test_errors_are_xml_with_request_id(gateway_url: str, dataset: DataSet) -> None:
    """Errors carry the S3 code, the resource and the request id of the x-amz-request-id header."""
    got = httpx.get(f"{gateway_url}/demo/1.0.0/missing.txt")
    assert got.status_code == 404
    assert got.headers["content-type"] == "application/xml"
    request_id = got.headers["x-amz-request-id"]
    assert f"<RequestId>{request_id}</RequestId>" in got.text
    assert "<Code>NoSuchKey</Code>" in got.text
    assert "<Resource>/demo/1.0.0/missing.txt</Resource>" in got.text


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/demo?list-type=2&max-keys=-1", 400, "InvalidArgument"),
        ("/demo?list-type=2&max-keys=abc", 400, "InvalidArgument"),
        ("/demo?list-type=2&encoding-type=base64", 400, "InvalidArgument"),
        ("/demo?list-type=2&continuation-token=forged", 400, "InvalidArgument"),
        ("/demo?list-type=3", 400, "InvalidArgument"),
        ("/demo?list-type=2&prefix=%00", 400, "InvalidArgument"),
        ("/demo/1.0.0/%FF%FE", 400, "InvalidURI"),
        ("/demo/1.0.0/README.md?versionId=abc", 400, "InvalidArgument"),
        ("/demo/1.0.0/README.md?partNumber=2", 416, "InvalidPartNumber"),
        ("/demo?acl", 501, "NotImplemented"),
        ("/demo?uploads", 501, "NotImplemented"),
        ("/Not_A_Package", 404, "NoSuchBucket"),
        ("/demo/no-slash-key", 404, "NoSuchKey"),
    ],
)
def test_bad_input_never_500(
    gateway_url: str, dataset: DataSet, path: str, status: int, code: str
) -> None:
    """Malformed parameters, paths and unsupported sub-resources get S3 errors, never a 500."""
    got = httpx.get(gateway_url + path)
    assert got.status_code == status, got.text
    assert f"<Code>{code}</Code>" in got.text


def test_head_object_sends_no_body(gateway_url: str, dataset: DataSet) -> None:
    """HEAD answers the object's length and identity headers with no body."""
    got = httpx.head(f"{gateway_url}/demo/2.0.0/big.bin")
    assert got.status_code == 200
    assert got.content == b""
    assert int(got.headers["content-length"]) == len(dataset.objects[("demo", "2.0.0/big.bin")])
    assert re.fullmatch(r'"[0-9a-f]{64}"', got.headers["etag"])
    assert got.headers["accept-ranges"] == "bytes"


def test_continuation_token_is_bound_to_its_bucket(s3: S3Client, dataset: DataSet) -> None:
    """A token issued for one bucket is refused for another, and a changed one is refused."""
    first = s3.list_objects_v2(Bucket="many", MaxKeys=2)
    token = first["NextContinuationToken"]
    following = s3.list_objects_v2(Bucket="many", MaxKeys=2, ContinuationToken=token)
    assert following["Contents"][0]["Key"] == dataset.keys("many")[2]
    with pytest.raises(Exception, match="InvalidArgument"):
        s3.list_objects_v2(Bucket="demo", ContinuationToken=token)
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(Exception, match="InvalidArgument"):
        s3.list_objects_v2(Bucket="many", ContinuationToken=flipped)


def test_start_after_and_v1_marker(s3: S3Client, dataset: DataSet) -> None:
    """start-after and marker resume strictly after the given key; v1 sends NextMarker."""
    keys = dataset.keys("many")
    after = s3.list_objects_v2(Bucket="many", StartAfter=keys[9], MaxKeys=3)
    assert [o["Key"] for o in after["Contents"]] == keys[10:13]
    v1 = s3.list_objects(Bucket="demo", Delimiter="/", MaxKeys=1)
    assert v1["IsTruncated"]
    assert v1["NextMarker"] == "1.0.0/"
    rest = s3.list_objects(Bucket="demo", Delimiter="/", Marker=v1["NextMarker"])
    assert [p["Prefix"] for p in rest["CommonPrefixes"]] == ["2.0.0/"]


class CountingRegistry(Registry):
    """The real registry, counting ``files`` calls and rows read (a spy, not a mock)."""

    calls = 0
    rows = 0

    async def files(
        self,
        package: str,
        *,
        after_key: str = "",
        prefix: str = "",
        limit: int = 1000,
        include_yanked: bool = True,
    ) -> list[FileRecord]:
        """Delegate to the real query and count."""
        found = await super().files(
            package,
            after_key=after_key,
            prefix=prefix,
            limit=limit,
            include_yanked=include_yanked,
        )
        self.calls += 1
        self.rows += len(found)
        return found


async def test_common_prefixes_are_skipped_not_scanned(
    gw_registry: Registry, dataset: DataSet
) -> None:
    """Rolling 1205 keys up into one prefix reads a few short batches, not every key."""
    spy = CountingRegistry(gw_registry.settings, gw_registry.database, gw_registry.store)
    page = await list_page(
        spy, "many", prefix="", delimiter="/", after="", max_keys=1000, include_yanked=False
    )
    assert page.common_prefixes == ("1/",)
    assert not page.truncated
    assert spy.calls <= 3
    assert spy.rows < 1100
    spy.calls = spy.rows = 0
    page = await list_page(
        spy, "many", prefix="1/", delimiter="/", after="", max_keys=1, include_yanked=False
    )
    assert page.common_prefixes == ("1/f/",)
    assert not page.truncated
    assert spy.rows <= 3


async def _get(settings: Settings, registry: Registry, host: str, path: str) -> httpx.Response:
    app = create_gateway_app(settings, registry=registry, host=host)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.get(path)


async def test_anonymous_reads_need_the_setting_and_loopback(
    gw_settings: Settings, gw_registry: Registry, dataset: DataSet
) -> None:
    """Unsigned reads work on loopback with anonymous_read, and are AccessDenied otherwise."""
    path = "/demo/1.0.0/README.md"
    assert (await _get(gw_settings, gw_registry, "127.0.0.1", path)).status_code == 200
    off = dataclasses.replace(
        gw_settings,
        gateway=dataclasses.replace(gw_settings.gateway, anonymous_read=False),
    )
    denied = await _get(off, gw_registry, "127.0.0.1", path)
    assert denied.status_code == 403
    assert "<Code>AccessDenied</Code>" in denied.text
    public = await _get(gw_settings, gw_registry, "0.0.0.0", path)  # noqa: S104 - the point
    assert public.status_code == 403


async def test_yanked_listed_when_configured(
    gw_settings: Settings, gw_registry: Registry, dataset: DataSet
) -> None:
    """With gateway.list_yanked the yanked version appears in listings."""
    shown = dataclasses.replace(
        gw_settings, gateway=dataclasses.replace(gw_settings.gateway, list_yanked=True)
    )
    got = await _get(shown, gw_registry, "127.0.0.1", "/demo?list-type=2&delimiter=/")
    assert "<Prefix>0.9.0/</Prefix>" in got.text


def test_gateway_settings_default_is_anonymous_on_loopback() -> None:
    """The default gateway settings allow anonymous reads (honoured only on loopback)."""
    assert GatewaySettings().anonymous_read is True


@pytest.mark.parametrize(
    "name", ["app", "auth", "buckets", "catalog", "listing", "objects", "routing"]
)
def test_all_lists_public_names(name: str) -> None:
    """Every name in a gateway module's __all__ exists, and every public function is listed."""
    module = importlib.import_module(f"artifactstore.gateway.{name}")
    names = set(module.__all__)
    assert all(hasattr(module, n) for n in names)
    public = {
        n
        for n, value in vars(module).items()
        if not n.startswith("_")
        and callable(value)
        and getattr(value, "__module__", None) == module.__name__
    }
    assert public <= names
