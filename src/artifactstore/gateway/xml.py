"""S3 XML response documents, built as UTF-8 bytes.

Owns: ListAllMyBucketsResult (ListBuckets), ListBucketResult in its v2
(ListObjectsV2) and v1 (ListObjects) shapes, LocationConstraint
(GetBucketLocation) and the Error document; the value types they list; the
S3 timestamp format; and ``encoding-type=url`` encoding. It does not decide
what to list (paging, prefixes, delimiters are the gateway's) and parses
nothing.

Spec: the Amazon S3 API reference for those operations. Documents carry the
namespace ``http://s3.amazonaws.com/doc/2006-03-01/`` except Error, which S3
sends without one. Text is escaped with ``xml.sax.saxutils``; characters XML
1.0 cannot carry literally (C0 controls, CR) become character references as
S3 writes them; clients that need such keys ask for ``encoding-type=url``,
which S3 applies to Key, Prefix, Delimiter, StartAfter, Marker, NextMarker
and CommonPrefixes/Prefix (botocore asks for it and decodes those fields).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import quote_plus
from xml.sax.saxutils import escape

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "S3_NAMESPACE",
    "BucketEntry",
    "ObjectEntry",
    "Owner",
    "error_xml",
    "list_buckets_xml",
    "list_objects_v1_xml",
    "list_objects_v2_xml",
    "location_xml",
    "quote_etag",
    "s3_timestamp",
    "url_encode",
]

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
# Characters XML 1.0 text cannot hold literally; CR would be normalised away.
_NEEDS_CHAR_REF = re.compile("[\x00-\x08\x0b\x0c\x0d\x0e-\x1f\ufffe\uffff]")
_DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True, slots=True)
class Owner:
    """The ``Owner`` element of a bucket list or an object entry."""

    id: str
    display_name: str


@dataclass(frozen=True, slots=True)
class BucketEntry:
    """One bucket in ListAllMyBucketsResult."""

    name: str
    creation_date: datetime


@dataclass(frozen=True, slots=True)
class ObjectEntry:
    """One ``Contents`` element: ``etag`` as sent in headers (quoted or bare; quoted on output)."""

    key: str
    last_modified: datetime
    etag: str
    size: int
    storage_class: str = "STANDARD"
    owner: Owner | None = None


def s3_timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z`` (``2009-10-12T17:50:30.000Z``); naive is UTC."""
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def quote_etag(etag: str) -> str:
    """The ETag in double quotes, as S3 lists it; already quoted values are kept."""
    return etag if len(etag) >= 2 and etag[0] == etag[-1] == '"' else f'"{etag}"'  # noqa: PLR2004


def url_encode(value: str) -> str:
    """``encoding-type=url``: UTF-8 percent-encoding, ``/`` kept, space as ``+``.

    Decodes with ``urllib.parse.unquote_plus``, which is what botocore uses.
    """
    return quote_plus(value, safe="/")


def _text(value: str) -> str:
    escaped = escape(value, {'"': "&quot;"})
    return _NEEDS_CHAR_REF.sub(lambda m: f"&#x{ord(m.group()):X};", escaped)


def _el(name: str, value: str | int | bool | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    else:
        text = _text(value)
    return f"<{name}>{text}</{name}>" if text else f"<{name}/>"


def _owner(owner: Owner | None) -> str:
    if owner is None:
        return ""
    return f"<Owner>{_el('ID', owner.id)}{_el('DisplayName', owner.display_name)}</Owner>"


def _document(root: str, body: str, *, namespace: bool = True) -> bytes:
    attrs = f' xmlns="{S3_NAMESPACE}"' if namespace else ""
    return f"{_DECLARATION}<{root}{attrs}>{body}</{root}>".encode()


def list_buckets_xml(buckets: Iterable[BucketEntry], owner: Owner) -> bytes:
    """ListAllMyBucketsResult: the owner, then each bucket's name and creation date."""
    items = "".join(
        f"<Bucket>{_el('Name', b.name)}{_el('CreationDate', s3_timestamp(b.creation_date))}"
        "</Bucket>"
        for b in buckets
    )
    return _document("ListAllMyBucketsResult", f"{_owner(owner)}<Buckets>{items}</Buckets>")


def _contents(entries: Iterable[ObjectEntry], encode: bool) -> str:
    parts = []
    for e in entries:
        key = url_encode(e.key) if encode else e.key
        parts.append(
            "<Contents>"
            f"{_el('Key', key)}"
            f"{_el('LastModified', s3_timestamp(e.last_modified))}"
            f"{_el('ETag', quote_etag(e.etag))}"
            f"{_el('Size', e.size)}"
            f"{_owner(e.owner)}"
            f"{_el('StorageClass', e.storage_class)}"
            "</Contents>"
        )
    return "".join(parts)


def _common_prefixes(prefixes: Iterable[str], encode: bool) -> str:
    return "".join(
        f"<CommonPrefixes>{_el('Prefix', url_encode(p) if encode else p)}</CommonPrefixes>"
        for p in prefixes
    )


def _maybe(value: str | None, encode: bool) -> str | None:
    return url_encode(value) if encode and value is not None else value


def list_objects_v2_xml(
    *,
    bucket: str,
    prefix: str,
    max_keys: int,
    is_truncated: bool,
    contents: Sequence[ObjectEntry],
    common_prefixes: Sequence[str] = (),
    delimiter: str | None = None,
    continuation_token: str | None = None,
    next_continuation_token: str | None = None,
    start_after: str | None = None,
    encoding_type: str | None = None,
) -> bytes:
    """ListBucketResult for ListObjectsV2; ``KeyCount`` counts contents and common prefixes.

    Optional elements are omitted when None. With ``encoding_type="url"``
    the key-like fields are url-encoded and ``EncodingType`` is echoed;
    continuation tokens are never encoded (they are opaque and url-safe).
    """
    encode = encoding_type == "url"
    body = (
        _el("Name", bucket)
        + _el("Prefix", _maybe(prefix, encode))
        + _el("Delimiter", _maybe(delimiter, encode))
        + _el("MaxKeys", max_keys)
        + _el("EncodingType", encoding_type)
        + _el("KeyCount", len(contents) + len(common_prefixes))
        + _el("IsTruncated", is_truncated)
        + _el("ContinuationToken", continuation_token)
        + _el("NextContinuationToken", next_continuation_token)
        + _el("StartAfter", _maybe(start_after, encode))
        + _contents(contents, encode)
        + _common_prefixes(common_prefixes, encode)
    )
    return _document("ListBucketResult", body)


def list_objects_v1_xml(
    *,
    bucket: str,
    prefix: str,
    marker: str,
    max_keys: int,
    is_truncated: bool,
    contents: Sequence[ObjectEntry],
    common_prefixes: Sequence[str] = (),
    delimiter: str | None = None,
    next_marker: str | None = None,
    encoding_type: str | None = None,
) -> bytes:
    """ListBucketResult for ListObjects (v1): ``Marker`` always, ``NextMarker`` when given.

    S3 sends ``NextMarker`` only for a truncated listing with a delimiter;
    the caller decides. Encoding as in ``list_objects_v2_xml``.
    """
    encode = encoding_type == "url"
    body = (
        _el("Name", bucket)
        + _el("Prefix", _maybe(prefix, encode))
        + _el("Marker", _maybe(marker, encode))
        + _el("NextMarker", _maybe(next_marker, encode))
        + _el("MaxKeys", max_keys)
        + _el("Delimiter", _maybe(delimiter, encode))
        + _el("EncodingType", encoding_type)
        + _el("IsTruncated", is_truncated)
        + _contents(contents, encode)
        + _common_prefixes(common_prefixes, encode)
    )
    return _document("ListBucketResult", body)


def location_xml(region: str | None) -> bytes:
    """LocationConstraint; empty for us-east-1 or None, as S3 answers for that region."""
    value = "" if region in {None, _DEFAULT_REGION} else region
    root = "LocationConstraint"
    text = _text(value or "")
    inner = f'<{root} xmlns="{S3_NAMESPACE}">{text}</{root}>'
    return f"{_DECLARATION}{inner}".encode()


def error_xml(
    code: str,
    message: str,
    *,
    resource: str | None = None,
    request_id: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> bytes:
    """The Error document: Code, Message, extra fields in order, Resource, RequestId."""
    fields = "".join(_el(name, value) for name, value in (extra or {}).items())
    body = (
        _el("Code", code)
        + _el("Message", message)
        + fields
        + _el("Resource", resource)
        + _el("RequestId", request_id)
    )
    return _document("Error", body, namespace=False)
