"""The gateway through boto3, a real SigV4 client, against a real uvicorn server."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import TYPE_CHECKING

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from tests.gateway.support import ACCESS_KEY, MANY_FILES, SECRET_KEY

if TYPE_CHECKING:
    from pathlib import Path

    from mypy_boto3_s3 import S3Client
    from tests.gateway.support import DataSet


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_list_buckets_names_every_package(s3: S3Client, dataset: DataSet) -> None:
    """ListBuckets lists each package as a bucket."""
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert names == ["demo", "many"]


def test_paginator_lists_more_than_1000_keys_in_order(s3: S3Client, dataset: DataSet) -> None:
    """The ListObjectsV2 paginator walks 1205 keys over two pages, in order, once each."""
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="many"))
    keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
    assert len(pages) == 2
    assert keys == dataset.keys("many")
    assert len(keys) == MANY_FILES


def test_v1_paginator_lists_every_key(s3: S3Client, dataset: DataSet) -> None:
    """The ListObjects (v1) paginator follows markers through all keys."""
    pages = s3.get_paginator("list_objects").paginate(
        Bucket="many", PaginationConfig={"PageSize": 500}
    )
    keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
    assert keys == dataset.keys("many")


def test_delimiter_rolls_versions_up_and_hides_yanked(s3: S3Client, dataset: DataSet) -> None:
    """With delimiter '/', versions are common prefixes; the yanked 0.9.0 is not listed."""
    got = s3.list_objects_v2(Bucket="demo", Delimiter="/")
    assert [p["Prefix"] for p in got["CommonPrefixes"]] == ["1.0.0/", "2.0.0/"]
    assert "Contents" not in got
    assert got["KeyCount"] == 2


def test_prefix_and_delimiter_list_one_level(s3: S3Client, dataset: DataSet) -> None:
    """Prefix '1.0.0/' with delimiter lists that version's top-level files and directories."""
    got = s3.list_objects_v2(Bucket="demo", Prefix="1.0.0/", Delimiter="/")
    assert [o["Key"] for o in got["Contents"]] == ["1.0.0/README.md", "1.0.0/empty.txt"]
    assert [p["Prefix"] for p in got["CommonPrefixes"]] == [
        "1.0.0/data/",
        "1.0.0/dist/",
        "1.0.0/docs/",
    ]


def test_delimiter_pages_of_one_prefix_each(s3: S3Client, dataset: DataSet) -> None:
    """MaxKeys=1 with a delimiter pages through prefixes without repeating one."""
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket="demo", Delimiter="/", PaginationConfig={"PageSize": 1}
    )
    prefixes = [p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])]
    assert prefixes == ["1.0.0/", "2.0.0/"]


def test_listing_entries_carry_sha256_etag_and_size(s3: S3Client, dataset: DataSet) -> None:
    """Each Contents entry has the quoted sha256 hex ETag (64 characters) and the size."""
    got = s3.list_objects_v2(Bucket="demo", Prefix="2.0.0/", FetchOwner=True)
    for entry in got["Contents"]:
        data = dataset.objects[("demo", entry["Key"])]
        assert entry["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
        assert entry["Size"] == len(data)
        assert entry["Owner"]["ID"] == "artifactstore"


def test_special_characters_round_trip_with_url_encoding(s3: S3Client, dataset: DataSet) -> None:
    """Keys with spaces, '+' and non-ASCII list (encoding-type=url) and download exactly."""
    got = s3.list_objects_v2(Bucket="demo", Prefix="1.0.0/docs/")
    keys = [o["Key"] for o in got["Contents"]]
    assert keys == ["1.0.0/docs/a b+c.txt", "1.0.0/docs/\u00e9t\u00e9.txt"]
    for key in keys:
        assert (
            s3.get_object(Bucket="demo", Key=key)["Body"].read() == dataset.objects[("demo", key)]
        )


def test_get_object_headers_and_checksum_mode(s3: S3Client, dataset: DataSet) -> None:
    """GetObject: bytes, media type, sha256 ETag and, in checksum mode, x-amz-checksum-sha256."""
    key = "1.0.0/dist/app.tar.gz"
    data = dataset.objects[("demo", key)]
    got = s3.get_object(Bucket="demo", Key=key, ChecksumMode="ENABLED")
    assert got["Body"].read() == data
    assert got["ContentType"] == "application/gzip"
    assert got["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert got["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert got["ContentLength"] == len(data)


def test_ranged_gets(s3: S3Client, dataset: DataSet) -> None:
    """Closed, open-ended and suffix ranges answer 206 with the right bytes; past the end is 416."""
    key = "1.0.0/dist/app.tar.gz"
    data = dataset.objects[("demo", key)]
    closed = s3.get_object(Bucket="demo", Key=key, Range="bytes=10-19")
    assert closed["Body"].read() == data[10:20]
    assert closed["ContentRange"] == f"bytes 10-19/{len(data)}"
    assert (
        s3.get_object(Bucket="demo", Key=key, Range="bytes=299990-")["Body"].read() == data[299990:]
    )
    assert s3.get_object(Bucket="demo", Key=key, Range="bytes=-5")["Body"].read() == data[-5:]
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="demo", Key=key, Range=f"bytes={len(data)}-")
    assert _code(caught) == "InvalidRange"


def test_conditional_gets(s3: S3Client, dataset: DataSet) -> None:
    """If-Match/If-None-Match/If-(Un)Modified-Since give 200, 304 and 412 as S3 does."""
    key = "1.0.0/README.md"
    head = s3.head_object(Bucket="demo", Key=key)
    etag, modified = head["ETag"], head["LastModified"]
    assert s3.get_object(Bucket="demo", Key=key, IfMatch=etag)["Body"].read()
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="demo", Key=key, IfMatch='"' + "0" * 64 + '"')
    assert _code(caught) == "PreconditionFailed"
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="demo", Key=key, IfNoneMatch=etag)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="demo", Key=key, IfModifiedSince=modified)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="demo", Key=key, IfUnmodifiedSince=modified - timedelta(days=1))
    assert _code(caught) == "PreconditionFailed"
    earlier = s3.get_object(Bucket="demo", Key=key, IfModifiedSince=modified - timedelta(days=1))
    assert earlier["Body"].read() == dataset.objects[("demo", key)]


def test_response_header_overrides(s3: S3Client, dataset: DataSet) -> None:
    """The six response-* parameters override the matching response headers."""
    got = s3.get_object(
        Bucket="demo",
        Key="1.0.0/README.md",
        ResponseContentType="text/plain",
        ResponseContentDisposition='attachment; filename="r.md"',
        ResponseCacheControl="no-cache",
        ResponseExpires=datetime(2030, 1, 1, tzinfo=UTC),
        ResponseContentLanguage="en",
        ResponseContentEncoding="identity",
    )
    assert got["ContentType"] == "text/plain"
    assert got["ContentDisposition"] == 'attachment; filename="r.md"'
    assert got["CacheControl"] == "no-cache"
    assert got["ContentLanguage"] == "en"
    assert got["ContentEncoding"] == "identity"
    assert got["ResponseMetadata"]["HTTPHeaders"]["expires"] == format_datetime(
        datetime(2030, 1, 1, tzinfo=UTC), usegmt=True
    )


def test_yanked_version_stays_readable_by_key(s3: S3Client, dataset: DataSet) -> None:
    """A yanked version's file is hidden from listings but still served by exact key."""
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket="demo")["Contents"]]
    assert "0.9.0/old.txt" not in listed
    assert s3.get_object(Bucket="demo", Key="0.9.0/old.txt")["Body"].read() == b"old\n"


def test_missing_bucket_and_key(s3: S3Client, dataset: DataSet) -> None:
    """Unknown buckets answer NoSuchBucket and unknown keys NoSuchKey (HEAD: 404)."""
    with pytest.raises(ClientError) as caught:
        s3.list_objects_v2(Bucket="nope")
    assert _code(caught) == "NoSuchBucket"
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="demo", Key="1.0.0/nope")
    assert _code(caught) == "NoSuchKey"
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="nope", Key="1.0.0/nope")
    assert _code(caught) == "NoSuchBucket"
    with pytest.raises(ClientError) as caught:
        s3.head_object(Bucket="demo", Key="nope")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    s3.head_bucket(Bucket="demo")
    assert s3.get_bucket_location(Bucket="demo").get("LocationConstraint") is None


def test_presigned_url_fetched_with_httpx(s3: S3Client, dataset: DataSet) -> None:
    """A presigned GET URL works from a plain HTTP client; a tampered one is refused."""
    key = "1.0.0/dist/app.tar.gz"
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "demo", "Key": key}, ExpiresIn=60
    )
    got = httpx.get(url)
    assert got.status_code == 200
    assert got.content == dataset.objects[("demo", key)]
    assert "X-Amz-Signature=" in url
    tampered = httpx.get(url.replace("app.tar.gz", "app.tar.gz2"))
    assert tampered.status_code == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in tampered.content


def test_sigv2_presigned_url_is_not_taken_for_anonymous(gateway_url: str, dataset: DataSet) -> None:
    """A Signature Version 2 query with a bad signature is refused, never served anonymously."""
    got = httpx.get(
        f"{gateway_url}/demo/1.0.0/README.md?AWSAccessKeyId=reader&Signature=x&Expires=9999999999"
    )
    assert got.status_code == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in got.content


def test_wrong_secret_and_unknown_key_id_are_refused(gateway_url: str, dataset: DataSet) -> None:
    """A wrong secret gives SignatureDoesNotMatch; an unknown key id InvalidAccessKeyId."""
    cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
    wrong = boto3.client(
        "s3",
        endpoint_url=gateway_url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY + "x",
        region_name="us-east-1",
        config=cfg,
    )
    with pytest.raises(ClientError) as caught:
        wrong.list_objects_v2(Bucket="demo")
    assert _code(caught) == "SignatureDoesNotMatch"
    unknown = boto3.client(
        "s3",
        endpoint_url=gateway_url,
        aws_access_key_id="nobody",
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=cfg,
    )
    with pytest.raises(ClientError) as caught:
        unknown.get_object(Bucket="demo", Key="1.0.0/README.md")
    assert _code(caught) == "InvalidAccessKeyId"


def test_writes_are_denied_and_change_nothing(s3: S3Client, dataset: DataSet) -> None:
    """Object, multipart and bucket writes are refused and listings stay unchanged."""
    before = s3.list_objects_v2(Bucket="demo")["Contents"]
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket="demo", Key="1.0.0/README.md", Body=b"overwritten")
    assert _code(caught) == "AccessDenied"
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket="demo", Key="9.9.9/new.txt", Body=b"new")
    assert _code(caught) == "AccessDenied"
    with pytest.raises(ClientError) as caught:
        s3.delete_object(Bucket="demo", Key="1.0.0/README.md")
    assert _code(caught) == "AccessDenied"
    with pytest.raises(ClientError) as caught:
        s3.create_multipart_upload(Bucket="demo", Key="x")
    assert _code(caught) == "AccessDenied"
    with pytest.raises(ClientError) as caught:
        s3.create_bucket(Bucket="newbucket")
    assert _code(caught) == "AccessDenied"
    with pytest.raises(ClientError) as caught:
        s3.delete_objects(Bucket="demo", Delete={"Objects": [{"Key": "1.0.0/README.md"}]})
    assert _code(caught) == "AccessDenied"
    with pytest.raises(ClientError) as caught:
        s3.put_bucket_policy(Bucket="demo", Policy="{}")
    assert _code(caught) == "NotImplemented"
    with pytest.raises(ClientError) as caught:
        s3.get_object_tagging(Bucket="demo", Key="1.0.0/README.md")
    assert _code(caught) == "NotImplemented"
    assert s3.list_objects_v2(Bucket="demo")["Contents"] == before
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["demo", "many"]
    body = s3.get_object(Bucket="demo", Key="1.0.0/README.md")["Body"].read()
    assert body == dataset.objects[("demo", "1.0.0/README.md")]


def test_download_file_of_a_multi_chunk_object(
    s3: S3Client, dataset: DataSet, tmp_path: Path
) -> None:
    """The managed download of boto3 (parallel ranged GETs) of a 9 MiB object is byte-exact."""
    target = tmp_path / "big.bin"
    s3.download_file("demo", "2.0.0/big.bin", str(target))
    assert target.read_bytes() == dataset.objects[("demo", "2.0.0/big.bin")]
