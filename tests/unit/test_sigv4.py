"""SigV4 verification: AWS test-suite vectors, botocore as the reference signer, and refusals.

The vectors below are data from the AWS Signature Version 4 test suite
(published by Amazon Web Services in the "Signature Version 4 test suite",
aws-sig-v4-test-suite; credentials AKIDEXAMPLE / wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY,
region us-east-1, service ``service``), reproduced with attribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from unittest import mock
from urllib.parse import quote, urlsplit

import boto3
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest, AWSResponse, HTTPHeaders
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.gateway.support import RawBody

from artifactstore.gateway.errors import S3Error
from artifactstore.gateway.sigv4 import (
    EMPTY_SHA256,
    UNSIGNED_PAYLOAD,
    SigV4Error,
    VerifiedRequest,
    canonical_query_string,
    canonical_request,
    has_signature,
    parse_query,
    presign_query,
    sign_request,
    signing_key,
    string_to_sign,
    verify_request,
)
from artifactstore.gateway.xml import list_objects_v2_xml

if TYPE_CHECKING:
    from collections.abc import Iterator

SUITE_KEY = "AKIDEXAMPLE"
SUITE_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SUITE_NOW = datetime(2015, 8, 30, 12, 36, 0, tzinfo=UTC)
SUITE_HOST = ("Host", "example.amazonaws.com")
SUITE_DATE = ("X-Amz-Date", "20150830T123600Z")
SUITE_TOKEN = (
    "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfp"
    "SPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQ"
    "DYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+s"
    "cqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="
)


@dataclass(frozen=True)
class Vector:
    name: str
    method: str
    path: str  # as on the wire, percent-encoded
    query: str
    headers: tuple[tuple[str, str], ...]
    signed: str
    signature: str


VECTORS = [
    Vector("get-vanilla", "GET", "/", "", (SUITE_HOST, SUITE_DATE), "host;x-amz-date",
           "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    Vector("get-vanilla-query", "GET", "/", "", (SUITE_HOST, SUITE_DATE), "host;x-amz-date",
           "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    Vector("get-vanilla-empty-query-key", "GET", "/", "Param1=value1", (SUITE_HOST, SUITE_DATE),
           "host;x-amz-date", "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb"),
    Vector("get-vanilla-query-order-key", "GET", "/", "Param1=value2&Param1=Value1",
           (SUITE_HOST, SUITE_DATE), "host;x-amz-date",
           "eedbc4e291e521cf13422ffca22be7d2eb8146eecf653089df300a15b2382bd1"),
    Vector("get-vanilla-query-order-key-case", "GET", "/", "Param2=value2&Param1=value1",
           (SUITE_HOST, SUITE_DATE), "host;x-amz-date",
           "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
    Vector("get-vanilla-query-order-value", "GET", "/", "Param1=value2&Param1=value1",
           (SUITE_HOST, SUITE_DATE), "host;x-amz-date",
           "5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694"),
    Vector("get-vanilla-query-unreserved", "GET", "/",
           "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz="
           "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
           (SUITE_HOST, SUITE_DATE), "host;x-amz-date",
           "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197"),
    Vector("get-vanilla-utf8-query", "GET", "/", "%E1%88%B4=bar", (SUITE_HOST, SUITE_DATE),
           "host;x-amz-date", "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"),
    Vector("get-unreserved", "GET",
           "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", "",
           (SUITE_HOST, SUITE_DATE), "host;x-amz-date",
           "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"),
    Vector("get-utf8", "GET", "/%E1%88%B4", "", (SUITE_HOST, SUITE_DATE), "host;x-amz-date",
           "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"),
    Vector("get-space", "GET", "/example%20space/", "", (SUITE_HOST, SUITE_DATE),
           "host;x-amz-date", "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741"),
    Vector("get-header-key-duplicate", "GET", "/", "",
           (SUITE_HOST, ("My-Header1", "value2"), ("My-Header1", "value2"),
            ("My-Header1", "value1"), SUITE_DATE), "host;my-header1;x-amz-date",
           "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"),
    Vector("get-header-value-order", "GET", "/", "",
           (SUITE_HOST, ("My-Header1", "value4"), ("My-Header1", "value1"),
            ("My-Header1", "value3"), ("My-Header1", "value2"), SUITE_DATE),
           "host;my-header1;x-amz-date",
           "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01"),
    Vector("get-header-value-trim", "GET", "/", "",
           (SUITE_HOST, ("My-Header1", " value1"), ("My-Header2", ' "a   b   c"'), SUITE_DATE),
           "host;my-header1;my-header2;x-amz-date",
           "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"),
    Vector("post-vanilla", "POST", "/", "", (SUITE_HOST, SUITE_DATE), "host;x-amz-date",
           "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
    Vector("post-vanilla-query", "POST", "/", "Param1=value1", (SUITE_HOST, SUITE_DATE),
           "host;x-amz-date", "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"),
    Vector("post-header-key-case", "POST", "/", "", (SUITE_HOST, SUITE_DATE), "host;x-amz-date",
           "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
    Vector("post-header-key-sort", "POST", "/", "",
           (SUITE_HOST, ("My-Header1", "value1"), SUITE_DATE), "host;my-header1;x-amz-date",
           "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"),
    Vector("post-header-value-case", "POST", "/", "",
           (SUITE_HOST, ("My-Header1", "VALUE1"), SUITE_DATE), "host;my-header1;x-amz-date",
           "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d"),
    Vector("post-sts-header-before", "POST", "/", "",
           (SUITE_HOST, SUITE_DATE, ("X-Amz-Security-Token", SUITE_TOKEN)),
           "host;x-amz-date;x-amz-security-token",
           "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"),
    # The token is added after signing and not signed: verification ignores it.
    Vector("post-sts-header-after", "POST", "/", "",
           (SUITE_HOST, SUITE_DATE, ("X-Amz-Security-Token", SUITE_TOKEN)), "host;x-amz-date",
           "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
]  # fmt: skip


def _suite_authorization(v: Vector) -> str:
    return (
        f"AWS4-HMAC-SHA256 Credential={SUITE_KEY}/20150830/us-east-1/service/aws4_request, "
        f"SignedHeaders={v.signed}, Signature={v.signature}"
    )


def _suite_lookup(key: str) -> str | None:
    return SUITE_SECRET if key == SUITE_KEY else None


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_suite_vector_verifies(vector: Vector) -> None:
    """Each AWS test-suite request verifies with its published Authorization header."""
    headers = [*vector.headers, ("Authorization", _suite_authorization(vector))]
    result = verify_request(
        vector.method,
        vector.path,
        vector.query,
        headers,
        _suite_lookup,
        now=SUITE_NOW,
        service="service",
    )
    assert result.access_key_id == SUITE_KEY
    assert result.payload_hash == EMPTY_SHA256


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_suite_vector_signs(vector: Vector) -> None:
    """The signer reproduces each AWS test-suite signature byte for byte."""
    signed = sign_request(
        vector.method,
        vector.path,
        vector.query,
        list(vector.headers),
        access_key_id=SUITE_KEY,
        secret_access_key=SUITE_SECRET,
        now=SUITE_NOW,
        service="service",
        payload_hash=None,
        signed_headers=vector.signed.split(";"),
    )
    assert dict(signed)["authorization"] == _suite_authorization(vector)


def test_suite_vector_tampered_is_refused() -> None:
    """A test-suite request whose query was changed after signing does not verify."""
    vector = VECTORS[2]
    headers = [*vector.headers, ("Authorization", _suite_authorization(vector))]
    with pytest.raises(SigV4Error) as info:
        verify_request(
            "GET", "/", "Param1=value2", headers, _suite_lookup, now=SUITE_NOW, service="service"
        )
    assert info.value.code == "SignatureDoesNotMatch"


def test_suite_intermediate_forms() -> None:
    """Canonical request and string to sign match the suite's get-header-value-trim files."""
    headers = [SUITE_HOST, ("My-Header1", " value1"), ("My-Header2", ' "a   b   c"'), SUITE_DATE]
    creq = canonical_request(
        "GET",
        "/",
        "",
        headers,
        signed_headers=["host", "my-header1", "my-header2", "x-amz-date"],
        payload_hash=EMPTY_SHA256,
    )
    assert creq == (
        'GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\nmy-header2:"a b c"\n'
        "x-amz-date:20150830T123600Z\n\nhost;my-header1;my-header2;x-amz-date\n" + EMPTY_SHA256
    )
    sts = string_to_sign("20150830T123600Z", "20150830/us-east-1/service/aws4_request", creq)
    assert sts == (
        "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
        "a726db9b0df21c14f559d0a978e563112acb1b9e05476f0a6a1c7d68f28605c7"
    )


def test_suite_query_order_canonical_form() -> None:
    """get-vanilla-query-order-key-case: parameters sort by name, then by value (case-sensitive)."""
    assert canonical_query_string("Param2=value2&Param1=value1") == "Param1=value1&Param2=value2"
    assert canonical_query_string("Param1=value2&Param1=Value1") == "Param1=Value1&Param1=value2"


def test_double_encoding_matches_suite_for_unencoded_paths() -> None:
    """Double encoding (non-S3) encodes the suite's literal get-space and get-utf8 paths once."""
    for path, signature in (
        ("/example space/", "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741"),
        ("/\u1234", "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"),
    ):
        v = Vector("x", "GET", path, "", (SUITE_HOST, SUITE_DATE), "host;x-amz-date", signature)
        headers = [*v.headers, ("Authorization", _suite_authorization(v))]
        result = verify_request(
            "GET",
            path,
            "",
            headers,
            _suite_lookup,
            now=SUITE_NOW,
            service="service",
            double_encode_path=True,
        )
        assert result.access_key_id == SUITE_KEY


def test_s3_path_is_not_double_encoded() -> None:
    """For S3 an already encoded path is signed as is; double encoding it would not verify."""
    v = VECTORS[10]  # get-space, wire form /example%20space/
    headers = [*v.headers, ("Authorization", _suite_authorization(v))]
    with pytest.raises(SigV4Error) as info:
        verify_request(
            "GET",
            v.path,
            "",
            headers,
            _suite_lookup,
            now=SUITE_NOW,
            service="service",
            double_encode_path=True,
        )
    assert info.value.code == "SignatureDoesNotMatch"


# --- botocore as the reference signer --------------------------------------

KEY = "reader"
SECRET = "s3cr3t/with+odd=chars"
NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)
CREDS = Credentials(KEY, SECRET)


def _lookup(key: str) -> str | None:
    return SECRET if key == KEY else None


@dataclass(frozen=True)
class Wire:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]


def _botocore(
    url: str,
    *,
    presign: bool = False,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    region: str = "us-east-1",
    at: datetime = NOW,
    expires: int = 3600,
) -> Wire:
    """Sign with botocore itself and return what would arrive on the wire."""
    request = AWSRequest(method=method, url=url, headers=headers or {})
    auth = (
        S3SigV4QueryAuth(CREDS, "s3", region, expires=expires)
        if presign
        else S3SigV4Auth(CREDS, "s3", region)
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=at.replace(tzinfo=None)):
        auth.add_auth(request)
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    wire_headers = [("Host", parts.netloc), *prepared.headers.items()]
    return Wire(method, parts.path, parts.query, wire_headers)


def _verify(
    wire: Wire, *, region: str | None = None, allowed_skew: timedelta = timedelta(minutes=15)
) -> VerifiedRequest:
    return verify_request(
        wire.method,
        wire.path,
        wire.query,
        wire.headers,
        _lookup,
        now=NOW,
        region=region,
        allowed_skew=allowed_skew,
    )


BOTOCORE_URLS = [
    "http://127.0.0.1:9000/",
    "http://127.0.0.1:9000/pkg",
    "http://127.0.0.1:9000/pkg/1.0/dist/app.tar.gz",
    "http://127.0.0.1:9000/pkg/1.0/with%20space.txt",
    "http://127.0.0.1:9000/pkg/1.0/%E2%82%AC%F0%9F%93%A6/caf%C3%A9.bin",
    "http://127.0.0.1:9000/pkg/1.0/a%2Bb%3Dc~d",
    "http://127.0.0.1:9000/pkg/1.0/odd%21%27%28%29%2A%40%3A%2C%3B.txt",
    "http://127.0.0.1:9000/pkg?list-type=2&prefix=a%2Fb&delimiter=%2F&encoding-type=url",
    "http://127.0.0.1:9000/pkg?list-type=2&continuation-token=AQ-_x&max-keys=10&start-after=1.0%2Fa",
    "http://127.0.0.1:9000/pkg?location",
    "http://127.0.0.1:9000/pkg?prefix=&marker=",
    "http://127.0.0.1:9000/pkg?prefix=a%20b%2Bc",
    "http://pkg.localhost:9000/1.0/file.txt",
]


@pytest.mark.parametrize("url", BOTOCORE_URLS)
def test_botocore_header_signature_verifies(url: str) -> None:
    """A request signed by botocore's S3SigV4Auth verifies and names the access key."""
    result = _verify(_botocore(url))
    assert result.access_key_id == KEY
    assert not result.presigned
    assert "host" in result.signed_headers


@pytest.mark.parametrize("url", BOTOCORE_URLS)
def test_botocore_presigned_url_verifies(url: str) -> None:
    """A URL presigned by botocore's S3SigV4QueryAuth verifies with UNSIGNED-PAYLOAD."""
    result = _verify(_botocore(url, presign=True))
    assert result.presigned
    assert result.payload_hash == UNSIGNED_PAYLOAD


@pytest.mark.parametrize(
    "marker",
    [UNSIGNED_PAYLOAD, "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"],
)
def test_payload_markers_are_signed_as_given(marker: str) -> None:
    """x-amz-content-sha256 markers enter the canonical request verbatim."""
    wire = _botocore("http://127.0.0.1:9000/pkg/k", headers={"X-Amz-Content-SHA256": marker})
    # botocore replaces the header with its own payload hash; re-sign with ours to pin the marker.
    signed = sign_request(
        "GET",
        "/pkg/k",
        "",
        [("host", "127.0.0.1:9000")],
        access_key_id=KEY,
        secret_access_key=SECRET,
        now=NOW,
        payload_hash=marker,
    )
    assert _verify(Wire("GET", "/pkg/k", "", signed)).payload_hash == marker
    assert _verify(wire).access_key_id == KEY


def test_botocore_signed_extra_headers_verify() -> None:
    """Signed Range and conditional headers from botocore verify; changing one does not."""
    headers = {"Range": "bytes=0-9", "If-None-Match": '"abc"'}
    wire = _botocore("http://127.0.0.1:9000/pkg/1.0/f", headers=headers)
    assert "range" in _verify(wire).signed_headers
    changed = Wire(
        wire.method,
        wire.path,
        wire.query,
        [(n, "bytes=0-99" if n == "Range" else v) for n, v in wire.headers],
    )
    with pytest.raises(SigV4Error) as info:
        _verify(changed)
    assert info.value.code == "SignatureDoesNotMatch"


def test_region_is_checked_when_configured() -> None:
    """A scope naming another region is AuthorizationHeaderMalformed when a region is set."""
    wire = _botocore("http://127.0.0.1:9000/pkg", region="eu-west-1")
    assert _verify(wire).region == "eu-west-1"
    with pytest.raises(SigV4Error) as info:
        _verify(wire, region="us-east-1")
    assert info.value.code == "AuthorizationHeaderMalformed"
    assert info.value.status == 400
    assert info.value.extra["Region"] == "us-east-1"


def test_uppercase_and_lowercase_percent_encoding_both_verify() -> None:
    """A path sent with lowercase %xx still verifies against a signer that used uppercase."""
    wire = _botocore("http://127.0.0.1:9000/pkg/1.0/caf%C3%A9")
    lowered = Wire(wire.method, "/pkg/1.0/caf%c3%a9", wire.query, wire.headers)
    assert _verify(lowered).access_key_id == KEY


def test_clients_that_leave_reserved_characters_raw_verify() -> None:
    """A client that sends ``=`` raw in the path but signs it AWS-encoded still verifies."""
    signed = sign_request(
        "GET",
        "/pkg/a%3Db",
        "",
        [("host", "h")],
        access_key_id=KEY,
        secret_access_key=SECRET,
        now=NOW,
    )
    assert _verify(Wire("GET", "/pkg/a=b", "", signed)).access_key_id == KEY


def test_bytes_inputs_from_asgi_verify() -> None:
    """ASGI's raw_path, query_string and header pairs may be passed as bytes."""
    wire = _botocore("http://127.0.0.1:9000/pkg/1.0/caf%C3%A9?x=1")
    headers = [(n.lower().encode(), v.encode()) for n, v in wire.headers]
    result = verify_request(
        "GET", wire.path.encode(), wire.query.encode(), headers, _lookup, now=NOW
    )
    assert result.access_key_id == KEY


def test_own_presign_round_trips() -> None:
    """presign_query produces a URL that verify_request accepts, with the original query kept."""
    query = presign_query(
        "GET",
        "/pkg/1.0/a%20b",
        "prefix=x",
        [("host", "h:9000")],
        access_key_id=KEY,
        secret_access_key=SECRET,
        now=NOW,
        expires=60,
    )
    assert query.startswith("prefix=x&X-Amz-Algorithm=AWS4-HMAC-SHA256")
    result = verify_request("GET", "/pkg/1.0/a%20b", query, [("host", "h:9000")], _lookup, now=NOW)
    assert result.presigned


# --- clocks and expiry ------------------------------------------------------


def test_header_request_outside_skew_is_too_skewed() -> None:
    """A header-signed request older or newer than the allowed skew is RequestTimeTooSkewed."""
    for delta in (timedelta(minutes=16), -timedelta(minutes=16)):
        wire = _botocore("http://127.0.0.1:9000/pkg", at=NOW + delta)
        with pytest.raises(SigV4Error) as info:
            _verify(wire)
        assert info.value.code == "RequestTimeTooSkewed"
        assert info.value.status == 403


def test_header_request_within_skew_verifies() -> None:
    """A request 14 minutes off still verifies; a custom skew narrows the window."""
    wire = _botocore("http://127.0.0.1:9000/pkg", at=NOW - timedelta(minutes=14))
    assert _verify(wire).access_key_id == KEY
    with pytest.raises(SigV4Error):
        _verify(wire, allowed_skew=timedelta(minutes=1))


def test_presigned_url_expires() -> None:
    """A presigned URL used after date + expires is AccessDenied 'Request has expired'."""
    wire = _botocore(
        "http://127.0.0.1:9000/pkg/k", presign=True, expires=60, at=NOW - timedelta(seconds=61)
    )
    with pytest.raises(SigV4Error) as info:
        _verify(wire)
    assert info.value.code == "AccessDenied"
    assert info.value.message == "Request has expired"


def test_presigned_url_within_expiry_ignores_skew() -> None:
    """A presigned URL signed an hour ago with a day of validity verifies (no skew check)."""
    wire = _botocore(
        "http://127.0.0.1:9000/pkg/k", presign=True, expires=86400, at=NOW - timedelta(hours=1)
    )
    assert _verify(wire).presigned


def test_presigned_url_from_the_future_is_refused() -> None:
    """A presigned URL dated beyond the allowed skew is not valid yet."""
    wire = _botocore("http://127.0.0.1:9000/pkg/k", presign=True, at=NOW + timedelta(hours=1))
    with pytest.raises(SigV4Error) as info:
        _verify(wire)
    assert info.value.code == "AccessDenied"


@pytest.mark.parametrize("expires", ["0", "604801", "-1", "abc", ""])
def test_presigned_expires_out_of_range(expires: str) -> None:
    """X-Amz-Expires outside 1..604800 is AuthorizationQueryParametersError."""
    wire = _botocore("http://127.0.0.1:9000/pkg/k", presign=True)
    query = "&".join(
        f"X-Amz-Expires={expires}" if p.startswith("X-Amz-Expires=") else p
        for p in wire.query.split("&")
    )
    with pytest.raises(SigV4Error) as info:
        _verify(Wire("GET", wire.path, query, wire.headers))
    assert info.value.code == "AuthorizationQueryParametersError"


# --- refusals ---------------------------------------------------------------


def _replace_header(wire: Wire, name: str, value: str) -> Wire:
    headers = [(n, value if n.lower() == name else v) for n, v in wire.headers]
    return Wire(wire.method, wire.path, wire.query, headers)


def _authorization(wire: Wire) -> str:
    return next(v for n, v in wire.headers if n.lower() == "authorization")


def test_unknown_access_key() -> None:
    """A key the lookup does not know is InvalidAccessKeyId, named in the error's extras."""
    wire = _botocore("http://127.0.0.1:9000/pkg")
    with pytest.raises(SigV4Error) as info:
        verify_request("GET", wire.path, wire.query, wire.headers, lambda _: None, now=NOW)
    assert info.value.code == "InvalidAccessKeyId"
    assert info.value.extra["AWSAccessKeyId"] == KEY


def test_wrong_secret_gives_signature_mismatch_without_secrets() -> None:
    """A wrong secret is SignatureDoesNotMatch and the error reveals no secret or signature."""
    wire = _botocore("http://127.0.0.1:9000/pkg/1.0/f")
    with pytest.raises(SigV4Error) as info:
        verify_request("GET", wire.path, "", wire.headers, lambda _: "other", now=NOW)
    err = info.value
    assert err.code == "SignatureDoesNotMatch"
    assert err.status == 403
    text = err.to_xml().decode() + str(err)
    assert SECRET not in text
    assert "other" not in text
    signature = _authorization(wire).rsplit("=", 1)[1]
    assert signature not in text
    assert "AWS4-HMAC-SHA256\n" not in text


@pytest.mark.parametrize(
    ("path", "query"),
    [("/pkg/1.0/g", ""), ("/pkg/1.0/f", "x=1"), ("/pkg/1.0/F", "")],
)
def test_tampered_request_is_refused(path: str, query: str) -> None:
    """Changing the path or query after signing gives SignatureDoesNotMatch."""
    wire = _botocore("http://127.0.0.1:9000/pkg/1.0/f")
    with pytest.raises(SigV4Error) as info:
        _verify(Wire("GET", path, query, wire.headers))
    assert info.value.code == "SignatureDoesNotMatch"


def test_method_change_is_refused() -> None:
    """A GET signature does not authorise a DELETE of the same path."""
    wire = _botocore("http://127.0.0.1:9000/pkg/1.0/f")
    with pytest.raises(SigV4Error) as info:
        _verify(Wire("DELETE", wire.path, wire.query, wire.headers))
    assert info.value.code == "SignatureDoesNotMatch"


def test_presigned_signature_tampered() -> None:
    """A presigned URL with a flipped signature digit is SignatureDoesNotMatch."""
    wire = _botocore("http://127.0.0.1:9000/pkg/k", presign=True)
    head, sig = wire.query.rsplit("X-Amz-Signature=", 1)
    flipped = ("1" if sig[0] == "0" else "0") + sig[1:]
    with pytest.raises(SigV4Error) as info:
        _verify(Wire("GET", wire.path, f"{head}X-Amz-Signature={flipped}", wire.headers))
    assert info.value.code == "SignatureDoesNotMatch"


def test_unsigned_request_is_access_denied() -> None:
    """A request without any signature is AccessDenied, and has_signature says so."""
    headers = [("host", "h")]
    assert not has_signature("prefix=a", headers)
    with pytest.raises(SigV4Error) as info:
        verify_request("GET", "/pkg", "prefix=a", headers, _lookup, now=NOW)
    assert info.value.code == "AccessDenied"


def test_has_signature_detects_both_forms() -> None:
    """has_signature is true for an Authorization header and for presigned parameters."""
    assert has_signature("", [("Authorization", "garbage")])
    assert has_signature("X-Amz-Credential=x", [])
    assert has_signature(b"X-Amz-Signature=x", [])


@pytest.mark.parametrize(
    "authorization",
    [
        "AWS reader:signature",
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential=reader/20260314/us-east-1/s3/aws4_request",
        (
            "AWS4-HMAC-SHA256 Credential=reader/20260314/us-east-1/s3/aws4_request, "
            "SignedHeaders=host, Signature=zz"
        ),
        "AWS4-HMAC-SHA256 Credential=reader/20260314/us-east-1/s3/aws4_request, "
        "SignedHeaders=Host;X, Signature=" + "0" * 64,
        "AWS4-HMAC-SHA256 Credential=reader/20260314/us-east-1/s3/aws4_request, "
        "SignedHeaders=x-amz-date, Signature=" + "0" * 64,
        "AWS4-HMAC-SHA256 Credential=reader/20260314/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=" + "0" * 64 + ", Extra=1",
    ],
)
def test_malformed_authorization_is_access_denied(authorization: str) -> None:
    """A malformed Authorization header (or unsigned host) is AccessDenied."""
    wire = _replace_header(_botocore("http://127.0.0.1:9000/pkg"), "authorization", authorization)
    with pytest.raises(SigV4Error) as info:
        _verify(wire)
    assert info.value.code == "AccessDenied"


@pytest.mark.parametrize(
    "credential",
    [
        "reader/20260315/us-east-1/s3/aws4_request",  # date differs from X-Amz-Date
        "reader/20260314/us-east-1/ec2/aws4_request",  # wrong service
        "reader/20260314/us-east-1/s3/aws5_request",  # wrong terminator
        "reader/20260314/us-east-1/s3",  # too short
        "reader//us-east-1/s3/aws4_request",  # empty part
    ],
)
def test_bad_credential_scope_is_header_malformed(credential: str) -> None:
    """A credential scope that does not fit the request is AuthorizationHeaderMalformed (400)."""
    wire = _botocore("http://127.0.0.1:9000/pkg")
    authorization = _authorization(wire)
    start = authorization.index("Credential=") + len("Credential=")
    end = authorization.index(",", start)
    bad = _replace_header(
        wire, "authorization", authorization[:start] + credential + authorization[end:]
    )
    with pytest.raises(SigV4Error) as info:
        _verify(bad)
    assert info.value.code == "AuthorizationHeaderMalformed"
    assert info.value.status == 400


def test_bad_presigned_credential_is_query_parameters_error() -> None:
    """A presigned credential with the wrong service is AuthorizationQueryParametersError."""
    wire = _botocore("http://127.0.0.1:9000/pkg", presign=True)
    query = wire.query.replace("%2Fs3%2F", "%2Fsqs%2F")
    with pytest.raises(SigV4Error) as info:
        _verify(Wire("GET", wire.path, query, wire.headers))
    assert info.value.code == "AuthorizationQueryParametersError"


@pytest.mark.parametrize(
    "drop",
    ["X-Amz-Algorithm", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"],
)
def test_presigned_missing_parameter(drop: str) -> None:
    """A presigned URL missing any required parameter is AuthorizationQueryParametersError."""
    wire = _botocore("http://127.0.0.1:9000/pkg", presign=True)
    query = "&".join(p for p in wire.query.split("&") if not p.startswith(drop + "="))
    with pytest.raises(SigV4Error) as info:
        _verify(Wire("GET", wire.path, query, wire.headers))
    assert info.value.code == "AuthorizationQueryParametersError"


def test_presigned_repeated_parameter_is_refused() -> None:
    """A presigned URL repeating X-Amz-Expires is AuthorizationQueryParametersError."""
    wire = _botocore("http://127.0.0.1:9000/pkg", presign=True)
    with pytest.raises(SigV4Error) as info:
        _verify(Wire("GET", wire.path, wire.query + "&X-Amz-Expires=5", wire.headers))
    assert info.value.code == "AuthorizationQueryParametersError"


def test_presigned_wrong_algorithm() -> None:
    """A presigned URL naming another algorithm is AuthorizationQueryParametersError."""
    wire = _botocore("http://127.0.0.1:9000/pkg", presign=True)
    query = wire.query.replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256")
    with pytest.raises(SigV4Error) as info:
        _verify(Wire("GET", wire.path, query, wire.headers))
    assert info.value.code == "AuthorizationQueryParametersError"


def test_both_auth_forms_is_invalid_argument() -> None:
    """An Authorization header together with presigned parameters is InvalidArgument."""
    header = _botocore("http://127.0.0.1:9000/pkg")
    query = _botocore("http://127.0.0.1:9000/pkg", presign=True)
    with pytest.raises(SigV4Error) as info:
        _verify(Wire("GET", "/pkg", query.query, header.headers))
    assert info.value.code == "InvalidArgument"


def test_missing_date_is_access_denied() -> None:
    """A header-signed request without X-Amz-Date or Date is AccessDenied."""
    wire = _botocore("http://127.0.0.1:9000/pkg")
    headers = [(n, v) for n, v in wire.headers if n.lower() != "x-amz-date"]
    with pytest.raises(SigV4Error) as info:
        _verify(Wire("GET", wire.path, "", headers))
    assert info.value.code == "AccessDenied"


def test_date_header_is_accepted_instead_of_x_amz_date() -> None:
    """A request that signs the HTTP Date header instead of X-Amz-Date verifies."""
    headers = [("host", "h"), ("date", "Sat, 14 Mar 2026 15:09:26 GMT")]
    signed = sign_request(
        "GET",
        "/pkg",
        "",
        headers,
        access_key_id=KEY,
        secret_access_key=SECRET,
        now=NOW,
        signed_headers=["host", "date", "x-amz-content-sha256"],
    )
    signed = [(n, v) for n, v in signed if n != "x-amz-date"]
    # The signer used x-amz-date's value for the timestamp; both name the same second.
    assert _verify(Wire("GET", "/pkg", "", signed)).access_key_id == KEY


def test_signed_header_absent_is_access_denied() -> None:
    """A header named in SignedHeaders but absent from the request is AccessDenied."""
    wire = _botocore("http://127.0.0.1:9000/pkg", headers={"Range": "bytes=0-1"})
    headers = [(n, v) for n, v in wire.headers if n != "Range"]
    with pytest.raises(SigV4Error) as info:
        _verify(Wire("GET", wire.path, "", headers))
    assert info.value.code == "AccessDenied"


def test_bad_payload_hash_is_invalid_argument() -> None:
    """An x-amz-content-sha256 that is neither a marker nor a hex sha256 is InvalidArgument."""
    wire = _replace_header(_botocore("http://127.0.0.1:9000/pkg"), "x-amz-content-sha256", "nope")
    with pytest.raises(SigV4Error) as info:
        _verify(wire)
    assert info.value.code == "InvalidArgument"


def test_sigv4_error_is_an_s3_error() -> None:
    """SigV4Error is an S3Error, so the gateway renders it like any other."""
    assert issubclass(SigV4Error, S3Error)


# --- canonicalisation properties ---------------------------------------------


def test_parse_query_reads_plus_as_space_and_keeps_empty_values() -> None:
    """parse_query decodes percent escapes, reads ``+`` as a space and keeps bare names."""
    assert parse_query("a=1+2&b=%2B&location&c=") == [
        ("a", "1 2"),
        ("b", "+"),
        ("location", ""),
        ("c", ""),
    ]


def test_canonical_query_encodes_per_aws_rules() -> None:
    """Reserved characters are %XX-encoded uppercase, unreserved kept, empty values kept."""
    assert canonical_query_string("prefix=a/b&delimiter=/&location") == (
        "delimiter=%2F&location=&prefix=a%2Fb"
    )
    assert canonical_query_string("k=%7e%20*") == "k=~%20%2A"


def test_signing_key_matches_aws_documentation_example() -> None:
    """The derived key for the IAM documentation's example matches its published hex."""
    key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830", "us-east-1", "iam")
    assert key.hex() == "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"


_segment = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="/"),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(
    segments=st.lists(_segment, min_size=1, max_size=4),
    prefix=st.text(max_size=10),
)
def test_botocore_signed_arbitrary_keys_verify(segments: list[str], prefix: str) -> None:
    """Any key and prefix botocore can sign (quoted as its S3 serializer does) verifies."""
    path = "/pkg/" + "/".join(quote(s, safe="~") for s in segments)
    query = "prefix=" + quote(prefix, safe="~")
    wire = _botocore(f"http://127.0.0.1:9000{path}?{query}")
    assert _verify(wire).access_key_id == KEY
    presigned = _botocore(f"http://127.0.0.1:9000{path}?{query}", presign=True)
    assert _verify(presigned).presigned


# --- boto3 end to end, without a network ------------------------------------


KEYS = [
    "1.0/plain.txt",
    "1.0/with space.txt",
    "1.0/caf\u00e9/\u20ac.bin",
    "1.0/a+b=c~d",
    "1.0/!'()*@:,;$&",
]


@pytest.fixture(scope="module")
def _boto3_client() -> Iterator[tuple[Any, list[VerifiedRequest]]]:
    """A real boto3 S3 client whose requests are verified in process instead of sent."""
    session = boto3.session.Session(
        aws_access_key_id=KEY, aws_secret_access_key=SECRET, region_name="us-east-1"
    )
    client = session.client(
        "s3",
        endpoint_url="http://127.0.0.1:9000",
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    verified: list[VerifiedRequest] = []

    def answer(request: Any, **_: object) -> AWSResponse:
        parts = urlsplit(request.url)
        headers = [("host", parts.netloc), *request.headers.items()]
        amz_date = request.headers["X-Amz-Date"]
        amz_date = amz_date.decode() if isinstance(amz_date, bytes) else amz_date
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        verified.append(
            verify_request(request.method, parts.path, parts.query, headers, _lookup, now=signed_at)
        )
        body = b""
        if "list-type=2" in parts.query:
            body = list_objects_v2_xml(
                bucket="pkg",
                prefix="",
                max_keys=1000,
                is_truncated=False,
                contents=[],
                encoding_type="url",
            )
        response_headers = HTTPHeaders()
        response_headers["Content-Length"] = str(len(body))
        return AWSResponse(request.url, 200, response_headers, RawBody(body))

    # The stubs say handlers return None; before-send handlers may return the response.
    client.meta.events.register("before-send.s3", answer)  # type: ignore[arg-type]
    yield client, verified
    client.close()


@pytest.fixture
def boto3_client(
    _boto3_client: tuple[Any, list[VerifiedRequest]],
) -> tuple[Any, list[VerifiedRequest]]:
    """The module's boto3 client with an empty record of verified requests."""
    _boto3_client[1].clear()
    return _boto3_client


@pytest.mark.parametrize("key", KEYS)
def test_boto3_object_requests_verify(
    boto3_client: tuple[Any, list[VerifiedRequest]], key: str
) -> None:
    """boto3's own GetObject and HeadObject requests, for awkward keys, verify."""
    client, verified = boto3_client
    client.head_object(Bucket="pkg", Key=key)
    client.get_object(Bucket="pkg", Key=key, Range="bytes=0-9", IfNoneMatch='"x"')
    assert [v.access_key_id for v in verified] == [KEY, KEY]
    assert "range" in verified[1].signed_headers


def test_boto3_list_request_verifies(boto3_client: tuple[Any, list[VerifiedRequest]]) -> None:
    """boto3's ListObjectsV2 with prefix, delimiter and encoding-type=url verifies."""
    client, verified = boto3_client
    client.list_objects_v2(Bucket="pkg", Prefix="1.0/a b+c/", Delimiter="/", StartAfter="1.0/~")
    assert len(verified) == 1


@pytest.mark.parametrize("key", KEYS)
def test_boto3_presigned_urls_verify(key: str) -> None:
    """URLs from boto3's generate_presigned_url verify for awkward keys."""
    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9000",
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
        config=BotoConfig(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    url = client.generate_presigned_url("get_object", Params={"Bucket": "pkg", "Key": key})
    client.close()
    parts = urlsplit(url)
    params = dict(parse_query(parts.query))
    signed_at = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    result = verify_request(
        "GET", parts.path, parts.query, [("host", parts.netloc)], _lookup, now=signed_at
    )
    assert result.presigned


@pytest.mark.parametrize("expires", ["\u00b2", "\u0661\u0662", "+5", " 5"])
def test_presigned_expires_must_be_ascii_digits(expires: str) -> None:
    """Non-ASCII digits or signs in X-Amz-Expires are refused, never a crash."""
    wire = _botocore("http://127.0.0.1:9000/pkg/k", presign=True)
    query = "&".join(
        f"X-Amz-Expires={quote(expires)}" if p.startswith("X-Amz-Expires=") else p
        for p in wire.query.split("&")
    )
    with pytest.raises(SigV4Error) as info:
        _verify(Wire("GET", wire.path, query, wire.headers))
    assert info.value.code == "AuthorizationQueryParametersError"
