"""S3 XML documents and S3 errors: shape, escaping, url encoding, read back by botocore."""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote_plus

import botocore.session
import pytest
from botocore.parsers import RestXMLParser
from hypothesis import given
from hypothesis import strategies as st

from artifactstore.errors import (
    ArtifactStoreError,
    BackendUnavailableError,
    BlobNotFoundError,
    DigestMismatchError,
    FileNotInVersionError,
    ForbiddenError,
    InvalidInputError,
    InvalidRangeError,
    PackageNotFoundError,
    VersionConflictError,
    VersionNotFoundError,
)
from artifactstore.gateway import errors as gateway_errors
from artifactstore.gateway import sigv4, tokens
from artifactstore.gateway import xml as s3xml
from artifactstore.gateway.errors import S3_ERRORS, S3Error, s3_error_for
from artifactstore.gateway.xml import (
    BucketEntry,
    ObjectEntry,
    Owner,
    error_xml,
    list_buckets_xml,
    list_objects_v1_xml,
    list_objects_v2_xml,
    location_xml,
    quote_etag,
    s3_timestamp,
    url_encode,
)

NS = {"s3": s3xml.S3_NAMESPACE}
WHEN = datetime(2026, 3, 14, 15, 9, 26, 535_897, tzinfo=UTC)
ETAG = "a" * 64
OWNER = Owner("artifactstore", "artifactstore")


@functools.cache
def _s3_model() -> Any:
    return botocore.session.get_session().get_service_model("s3")


def _botocore_parse(operation: str, body: bytes, status: int = 200) -> dict[str, Any]:
    """Parse a response body with botocore's own S3 parser and output shape."""
    shape = _s3_model().operation_model(operation).output_shape
    parsed: dict[str, Any] = RestXMLParser().parse(
        {"body": body, "headers": {}, "status_code": status}, shape
    )
    return parsed


def _root(body: bytes) -> ET.Element:
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    return ET.fromstring(body)  # noqa: S314 - parsing our own output


def _entry(key: str, size: int = 3, *, owner: Owner | None = None) -> ObjectEntry:
    return ObjectEntry(key=key, last_modified=WHEN, etag=f'"{ETAG}"', size=size, owner=owner)


def test_timestamp_has_milliseconds_and_z() -> None:
    """S3 timestamps are UTC ISO 8601 with exactly three fractional digits and Z."""
    assert s3_timestamp(WHEN) == "2026-03-14T15:09:26.535Z"
    naive = datetime(2026, 1, 1)  # noqa: DTZ001 - naive input is read as UTC
    assert s3_timestamp(naive) == "2026-01-01T00:00:00.000Z"
    plus_two = timezone(timedelta(hours=2))
    assert s3_timestamp(datetime(2026, 1, 1, 2, tzinfo=plus_two)) == "2026-01-01T00:00:00.000Z"


def test_quote_etag_is_idempotent() -> None:
    """quote_etag adds quotes once and keeps already quoted values."""
    assert quote_etag(ETAG) == f'"{ETAG}"'
    assert quote_etag(f'"{ETAG}"') == f'"{ETAG}"'


def test_list_buckets_document() -> None:
    """ListAllMyBucketsResult names the owner and every bucket with its creation date."""
    body = list_buckets_xml([BucketEntry("alpha", WHEN), BucketEntry("beta", WHEN)], OWNER)
    root = _root(body)
    assert root.tag == f"{{{s3xml.S3_NAMESPACE}}}ListAllMyBucketsResult"
    names = [e.text for e in root.findall("s3:Buckets/s3:Bucket/s3:Name", NS)]
    assert names == ["alpha", "beta"]
    parsed = _botocore_parse("ListBuckets", body)
    assert [b["Name"] for b in parsed["Buckets"]] == ["alpha", "beta"]
    assert parsed["Buckets"][0]["CreationDate"] == WHEN.replace(microsecond=535_000)
    assert parsed["Owner"]["ID"] == "artifactstore"


def test_list_buckets_empty() -> None:
    """An empty bucket list is an empty Buckets element, which botocore reads as []."""
    assert _botocore_parse("ListBuckets", list_buckets_xml([], OWNER))["Buckets"] == []


def test_list_objects_v2_document_fields() -> None:
    """ListObjectsV2 carries every field, KeyCount counts keys and prefixes, ETags are quoted."""
    body = list_objects_v2_xml(
        bucket="pkg",
        prefix="1.0/",
        delimiter="/",
        max_keys=2,
        is_truncated=True,
        contents=[_entry("1.0/a.txt", owner=OWNER)],
        common_prefixes=["1.0/dist/"],
        continuation_token="tok-1",
        next_continuation_token="tok-2",
        start_after="1.0/",
    )
    parsed = _botocore_parse("ListObjectsV2", body)
    assert parsed["Name"] == "pkg"
    assert parsed["Prefix"] == "1.0/"
    assert parsed["Delimiter"] == "/"
    assert parsed["MaxKeys"] == 2
    assert parsed["KeyCount"] == 2
    assert parsed["IsTruncated"] is True
    assert parsed["ContinuationToken"] == "tok-1"
    assert parsed["NextContinuationToken"] == "tok-2"
    assert parsed["StartAfter"] == "1.0/"
    [item] = parsed["Contents"]
    assert item["Key"] == "1.0/a.txt"
    assert item["ETag"] == f'"{ETAG}"'
    assert item["Size"] == 3
    assert item["StorageClass"] == "STANDARD"
    assert item["Owner"] == {"ID": "artifactstore", "DisplayName": "artifactstore"}
    assert item["LastModified"] == WHEN.replace(microsecond=535_000)
    assert parsed["CommonPrefixes"] == [{"Prefix": "1.0/dist/"}]
    root = _root(body)
    assert root.find("s3:Contents/s3:LastModified", NS) is not None
    assert root.findtext("s3:Contents/s3:LastModified", namespaces=NS) == (
        "2026-03-14T15:09:26.535Z"
    )


def test_list_objects_v2_omits_absent_optionals() -> None:
    """Tokens, StartAfter, Delimiter, EncodingType and Owner are absent unless given."""
    body = list_objects_v2_xml(
        bucket="pkg", prefix="", max_keys=1000, is_truncated=False, contents=[_entry("k")]
    )
    text = body.decode()
    for name in ("ContinuationToken", "StartAfter", "Delimiter", "EncodingType", "Owner"):
        assert f"<{name}>" not in text
    assert "<Prefix/>" in text
    assert "<IsTruncated>false</IsTruncated>" in text
    assert "<KeyCount>1</KeyCount>" in text


def test_list_objects_v1_document() -> None:
    """ListObjects (v1) has Marker always and NextMarker when given."""
    body = list_objects_v1_xml(
        bucket="pkg",
        prefix="",
        marker="1.0/a",
        next_marker="1.0/c",
        delimiter="/",
        max_keys=2,
        is_truncated=True,
        contents=[_entry("1.0/b")],
        common_prefixes=["1.0/c/"],
    )
    parsed = _botocore_parse("ListObjects", body)
    assert parsed["Marker"] == "1.0/a"
    assert parsed["NextMarker"] == "1.0/c"
    assert [c["Key"] for c in parsed["Contents"]] == ["1.0/b"]
    assert parsed["CommonPrefixes"] == [{"Prefix": "1.0/c/"}]


def test_escaping_of_markup_characters() -> None:
    """Keys with <, >, & and quotes are escaped and read back unchanged."""
    key = "1.0/<a & b> \"q\" 'x'.txt"
    body = list_objects_v2_xml(
        bucket="pkg", prefix="", max_keys=10, is_truncated=False, contents=[_entry(key)]
    )
    assert b"<a & b>" not in body
    assert _botocore_parse("ListObjectsV2", body)["Contents"][0]["Key"] == key


def test_control_characters_become_character_references() -> None:
    """A CR in a key is written as a character reference so the parser keeps it."""
    body = list_objects_v2_xml(
        bucket="pkg", prefix="", max_keys=10, is_truncated=False, contents=[_entry("a\rb")]
    )
    assert b"a&#xD;b" in body
    assert _root(body).findtext("s3:Contents/s3:Key", namespaces=NS) == "a\rb"


def test_url_encoding_matches_botocore_decoding() -> None:
    """url_encode keeps ``/``, writes space as ``+`` and round-trips through unquote_plus."""
    assert url_encode("a b+c/é") == "a+b%2Bc/%C3%A9"
    for value in ("1.0/dir with space/x+y=z", "ünïcödé/\x01", "~tilde_-."):
        assert unquote_plus(url_encode(value)) == value


def test_encoding_type_url_applies_to_key_fields() -> None:
    """With encoding-type=url, Key, Prefix, Delimiter, StartAfter and CommonPrefixes are encoded."""
    body = list_objects_v2_xml(
        bucket="pkg",
        prefix="1.0/a b",
        delimiter=" ",
        max_keys=10,
        is_truncated=False,
        contents=[_entry("1.0/a b+c\x01")],
        common_prefixes=["1.0/a b/"],
        start_after="1.0/a ",
        continuation_token="AQ-_",
        encoding_type="url",
    )
    parsed = _botocore_parse("ListObjectsV2", body)
    assert parsed["EncodingType"] == "url"
    assert parsed["Prefix"] == "1.0/a+b"
    assert parsed["Delimiter"] == "+"
    assert parsed["StartAfter"] == "1.0/a+"
    assert parsed["Contents"][0]["Key"] == "1.0/a+b%2Bc%01"
    assert unquote_plus(parsed["Contents"][0]["Key"]) == "1.0/a b+c\x01"
    assert parsed["CommonPrefixes"] == [{"Prefix": "1.0/a+b/"}]
    assert parsed["ContinuationToken"] == "AQ-_"


def test_encoding_type_url_in_v1_covers_markers() -> None:
    """In ListObjects v1, Marker and NextMarker are url-encoded too."""
    body = list_objects_v1_xml(
        bucket="pkg",
        prefix="",
        marker="a b",
        next_marker="c d",
        max_keys=1,
        is_truncated=True,
        contents=[],
        encoding_type="url",
    )
    parsed = _botocore_parse("ListObjects", body)
    assert (parsed["Marker"], parsed["NextMarker"]) == ("a+b", "c+d")


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=40))
def test_any_key_survives_url_encoding_through_xml(key: str) -> None:
    """Any key, control characters included, survives encoding-type=url through the XML."""
    body = list_objects_v2_xml(
        bucket="pkg",
        prefix="",
        max_keys=1,
        is_truncated=False,
        contents=[_entry(key)],
        encoding_type="url",
    )
    text = _root(body).findtext("s3:Contents/s3:Key", namespaces=NS)
    assert text is not None
    assert unquote_plus(text) == key


def test_location_constraint() -> None:
    """GetBucketLocation answers empty for us-east-1 and the region name otherwise."""
    assert _botocore_parse("GetBucketLocation", location_xml("us-east-1")).get(
        "LocationConstraint"
    ) in {None, ""}
    assert _root(location_xml(None)).text is None
    root = _root(location_xml("eu-central-1"))
    assert root.tag == f"{{{s3xml.S3_NAMESPACE}}}LocationConstraint"
    assert root.text == "eu-central-1"


def test_error_document() -> None:
    """The Error document has Code, Message, extras, Resource and RequestId, without namespace."""
    body = error_xml(
        "NoSuchKey",
        "The specified key does not exist.",
        resource="/pkg/1.0/<x>",
        request_id="req-1",
        extra={"Key": "1.0/<x>", "BucketName": "pkg"},
    )
    root = _root(body)
    assert root.tag == "Error"
    assert [child.tag for child in root] == [
        "Code",
        "Message",
        "Key",
        "BucketName",
        "Resource",
        "RequestId",
    ]
    assert root.findtext("Resource") == "/pkg/1.0/<x>"
    parsed = RestXMLParser().parse(
        {"body": body, "headers": {}, "status_code": 404},
        None,  # type: ignore[arg-type]  # error responses are parsed without an output shape
    )
    assert parsed["Error"]["Code"] == "NoSuchKey"
    assert parsed["Error"]["Message"] == "The specified key does not exist."


# --- gateway errors ---------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("NoSuchBucket", 404),
        ("NoSuchKey", 404),
        ("InvalidRange", 416),
        ("InvalidArgument", 400),
        ("AccessDenied", 403),
        ("NotImplemented", 501),
        ("MethodNotAllowed", 405),
        ("SignatureDoesNotMatch", 403),
        ("InvalidAccessKeyId", 403),
        ("RequestTimeTooSkewed", 403),
        ("PreconditionFailed", 412),
        ("InternalError", 500),
        ("AuthorizationHeaderMalformed", 400),
        ("AuthorizationQueryParametersError", 400),
    ],
)
def test_s3_error_status_table(code: str, status: int) -> None:
    """Each S3 code carries S3's HTTP status and a default message."""
    err = S3Error(code)
    assert err.status == status
    assert err.message == S3_ERRORS[code][1]


def test_s3_error_to_xml() -> None:
    """S3Error renders its code, message, extras and resource into the Error document."""
    err = S3Error("NoSuchBucket", resource="/nope", extra={"BucketName": "nope"})
    root = _root(err.to_xml(request_id="r1"))
    assert root.findtext("Code") == "NoSuchBucket"
    assert root.findtext("BucketName") == "nope"
    assert root.findtext("Resource") == "/nope"
    assert root.findtext("RequestId") == "r1"


@pytest.mark.parametrize(
    ("exc", "code", "status"),
    [
        (PackageNotFoundError("no package"), "NoSuchBucket", 404),
        (VersionNotFoundError("no version"), "NoSuchKey", 404),
        (FileNotInVersionError("no file"), "NoSuchKey", 404),
        (BlobNotFoundError("no blob"), "NoSuchKey", 404),
        (InvalidRangeError("bad range", size=10), "InvalidRange", 416),
        (InvalidInputError("bad token"), "InvalidArgument", 400),
        (ForbiddenError("no"), "AccessDenied", 403),
        (VersionConflictError("conflict"), "OperationAborted", 409),
        (BackendUnavailableError("down"), "ServiceUnavailable", 503),
        (DigestMismatchError("bad bytes"), "InternalError", 500),
        (ArtifactStoreError("generic"), "InternalError", 500),
    ],
)
def test_artifactstore_errors_map_to_s3_codes(
    exc: ArtifactStoreError, code: str, status: int
) -> None:
    """Each artifactstore error family maps to its S3 code and status."""
    err = s3_error_for(exc, resource="/r")
    assert (err.code, err.status, err.resource) == (code, status, "/r")


def test_invalid_range_carries_object_size() -> None:
    """An InvalidRange error names the object's size as S3 does (ActualObjectSize)."""
    assert s3_error_for(InvalidRangeError("x", size=10)).extra == {"ActualObjectSize": "10"}


def test_foreign_exceptions_do_not_leak() -> None:
    """An unexpected exception becomes a generic InternalError without its message."""
    err = s3_error_for(RuntimeError("password=hunter2"))
    assert err.code == "InternalError"
    assert "hunter2" not in err.message


def test_s3_errors_pass_through() -> None:
    """An S3Error given to s3_error_for is returned unchanged."""
    original = S3Error("AccessDenied")
    assert s3_error_for(original) is original


def test_bad_continuation_token_maps_to_invalid_argument() -> None:
    """A tampered continuation token becomes InvalidArgument at the gateway's edge."""
    with pytest.raises(InvalidInputError) as info:
        tokens.decode_token(b"k", "garbage")
    assert s3_error_for(info.value).code == "InvalidArgument"


@pytest.mark.parametrize("module", [gateway_errors, s3xml, sigv4, tokens])
def test_all_lists_public_names(module: Any) -> None:
    """Every name in a gateway module's __all__ exists, and every public function is listed."""
    names = set(module.__all__)
    assert all(hasattr(module, name) for name in names)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and callable(value)
        and getattr(value, "__module__", None) == module.__name__
    }
    assert public <= names
