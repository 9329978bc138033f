"""Service and bucket reads: ListBuckets, HeadBucket, GetBucketLocation, ListObjects v1/v2.

Owns: reading and validating the listing parameters (``prefix``,
``delimiter``, ``max-keys``, ``continuation-token``, ``start-after``,
``fetch-owner``, ``encoding-type``, ``marker``), binding continuation tokens
to their bucket, and turning a ``ListingPage`` into the XML document. It
does not walk keys (``gateway/listing.py``) or render XML by hand
(``gateway/xml.py``).

Spec: ListBuckets, HeadBucket, GetBucketLocation, ListObjectsV2 and
ListObjects in the Amazon S3 API reference. ``max-keys`` above 1000 is
clamped to 1000 as S3 does; negative or non-numeric values are
``InvalidArgument``. Yanked versions are left out of listings unless
``gateway.list_yanked`` (they stay readable by exact key).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from artifactstore.errors import InvalidInputError
from artifactstore.gateway.errors import S3Error
from artifactstore.gateway.listing import MAX_KEYS, list_page, start_position
from artifactstore.gateway.objects import Reply
from artifactstore.gateway.tokens import decode_token, encode_token
from artifactstore.gateway.xml import (
    BucketEntry,
    ObjectEntry,
    Owner,
    list_buckets_xml,
    list_objects_v1_xml,
    list_objects_v2_xml,
    location_xml,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from artifactstore.gateway.listing import ListingPage
    from artifactstore.registry import Registry
    from artifactstore.registry.records import FileRecord

__all__ = [
    "OWNER",
    "REGION",
    "head_bucket",
    "list_buckets",
    "list_objects_v1",
    "list_objects_v2",
    "location",
]

REGION = "us-east-1"
OWNER = Owner(id="artifactstore", display_name="artifactstore")
XML = ("Content-Type", "application/xml")
_DIGITS = re.compile(r"[0-9]{1,12}")
_MAX_PARAM_CHARS = 1024


def _text_param(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "")
    if len(value.encode("utf-8", "surrogateescape")) > _MAX_PARAM_CHARS or "\x00" in value:
        raise S3Error("InvalidArgument", f"{name} is too long or contains NUL")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise S3Error("InvalidArgument", f"{name} is not valid UTF-8") from None
    return value


def _max_keys(params: Mapping[str, str]) -> int:
    raw = params.get("max-keys")
    if raw is None or raw == "":
        return MAX_KEYS
    if not _DIGITS.fullmatch(raw):
        raise S3Error(
            "InvalidArgument",
            "max-keys must be an integer between 0 and 2147483647",
            extra={"ArgumentName": "max-keys", "ArgumentValue": raw[:64]},
        )
    return min(int(raw), MAX_KEYS)


def _encoding(params: Mapping[str, str]) -> str | None:
    value = params.get("encoding-type")
    if value is None or value == "":
        return None
    if value.lower() != "url":
        raise S3Error(
            "InvalidArgument",
            "Invalid Encoding Method specified in Request",
            extra={"ArgumentName": "encoding-type", "ArgumentValue": value[:64]},
        )
    return "url"


def _entry(record: FileRecord, owner: Owner | None) -> ObjectEntry:
    return ObjectEntry(
        key=record.key,
        last_modified=record.published_at,
        etag=record.sha256.hex,
        size=record.size,
        owner=owner,
    )


async def list_buckets(registry: Registry) -> Reply:
    """Every package as a bucket, by name; creation date is the package's first publish."""
    entries: list[BucketEntry] = []
    cursor: str | None = None
    while True:
        page = await registry.packages(limit=MAX_KEYS, cursor=cursor)
        entries.extend(BucketEntry(p.name, p.created_at) for p in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return Reply(200, [XML], list_buckets_xml(entries, OWNER))


def head_bucket() -> Reply:
    """200 with the region; the caller has checked the bucket exists."""
    return Reply(200, [("x-amz-bucket-region", REGION)])


def location() -> Reply:
    """The LocationConstraint document (empty: us-east-1)."""
    return Reply(200, [XML], location_xml(REGION))


async def _page(
    registry: Registry,
    bucket: str,
    params: Mapping[str, str],
    *,
    after: str,
    max_keys: int,
    include_yanked: bool,
) -> tuple[str, str | None, ListingPage]:
    prefix = _text_param(params, "prefix")
    delimiter = _text_param(params, "delimiter") or None
    page = await list_page(
        registry,
        bucket,
        prefix=prefix,
        delimiter=delimiter,
        after=start_position(after, prefix, delimiter),
        max_keys=max_keys,
        include_yanked=include_yanked,
    )
    return prefix, delimiter, page


async def list_objects_v2(
    registry: Registry,
    bucket: str,
    params: Mapping[str, str],
    *,
    token_key: bytes,
    include_yanked: bool,
) -> Reply:
    """ListObjectsV2: a page, with a signed continuation token when truncated.

    Raises:
        S3Error: ``InvalidArgument`` for bad parameters or a token that is
            altered, foreign, or issued for another bucket.
    """
    max_keys = _max_keys(params)
    encoding = _encoding(params)
    start_after = _text_param(params, "start-after")
    token = params.get("continuation-token")
    after = start_after
    if token is not None:
        try:
            state = decode_token(token_key, token)
        except InvalidInputError:
            raise S3Error(
                "InvalidArgument", "The continuation token provided is incorrect"
            ) from None
        if state.get("bucket") != bucket or "after" not in state:
            raise S3Error("InvalidArgument", "The continuation token provided is incorrect")
        after = state["after"]
    prefix, delimiter, page = await _page(
        registry, bucket, params, after=after, max_keys=max_keys, include_yanked=include_yanked
    )
    owner = OWNER if params.get("fetch-owner", "").lower() == "true" else None
    next_token = None
    if page.truncated and page.next_after is not None:
        next_token = encode_token(token_key, {"bucket": bucket, "after": page.next_after})
    body = list_objects_v2_xml(
        bucket=bucket,
        prefix=prefix,
        max_keys=max_keys,
        is_truncated=page.truncated,
        contents=[_entry(r, owner) for r in page.contents],
        common_prefixes=page.common_prefixes,
        delimiter=delimiter,
        continuation_token=token,
        next_continuation_token=next_token,
        start_after=start_after or None,
        encoding_type=encoding,
    )
    return Reply(200, [XML], body)


async def list_objects_v1(
    registry: Registry, bucket: str, params: Mapping[str, str], *, include_yanked: bool
) -> Reply:
    """ListObjects (v1): a page after ``marker``; ``NextMarker`` whenever truncated.

    S3 sends NextMarker only with a delimiter; sending it always is allowed
    and saves clients from guessing between the last key and the last prefix.
    """
    max_keys = _max_keys(params)
    encoding = _encoding(params)
    marker = _text_param(params, "marker")
    prefix, delimiter, page = await _page(
        registry, bucket, params, after=marker, max_keys=max_keys, include_yanked=include_yanked
    )
    body = list_objects_v1_xml(
        bucket=bucket,
        prefix=prefix,
        marker=marker,
        max_keys=max_keys,
        is_truncated=page.truncated,
        contents=[_entry(r, OWNER) for r in page.contents],
        common_prefixes=page.common_prefixes,
        delimiter=delimiter,
        next_marker=page.last if page.truncated else None,
        encoding_type=encoding,
    )
    return Reply(200, [XML], body)
