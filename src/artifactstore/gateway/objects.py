"""GetObject and HeadObject: headers, conditionals, ranges, overrides, checksums.

Owns: the reply for one object read: ``ETag`` (the quoted sha256 hex, never
32 hex characters, which clients take for MD5), ``Last-Modified`` (publish
time), ``Content-Type`` (the manifest's media type), ``Content-Length``,
``Accept-Ranges``, ``Content-Range`` on 206, ``x-amz-checksum-sha256`` when
the client sends ``x-amz-checksum-mode: ENABLED`` (whole-object reads only,
as S3 does), the six ``response-*`` header overrides, the
preconditions (304, 412) and ranges (206, 416). HEAD decides everything
from the catalog and never opens the blob; GET opens it with the resolved
range, so the backend streams exactly the bytes sent.

It does not send anything (``gateway/app.py`` streams the ``ObjectStream``)
or authenticate. Spec: GetObject and HeadObject in the Amazon S3 API
reference; RFC 9110 sections 13 and 14 through ``artifactstore.http_ranges``.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from artifactstore.errors import InvalidRangeError
from artifactstore.gateway.errors import S3Error
from artifactstore.http_ranges import (
    evaluate_preconditions,
    format_http_date,
    if_range_allows,
    parse_range_header,
)
from artifactstore.storage.spi import SliceByteRange, resolve_range

if TYPE_CHECKING:
    from collections.abc import Mapping

    from artifactstore.gateway.catalog import Catalog
    from artifactstore.registry.records import FileRecord
    from artifactstore.storage.spi import ObjectStream

__all__ = ["RESPONSE_OVERRIDES", "Reply", "object_reply"]

#: ``response-*`` query parameter -> the response header it sets.
RESPONSE_OVERRIDES: Mapping[str, str] = {
    "response-content-type": "Content-Type",
    "response-content-disposition": "Content-Disposition",
    "response-cache-control": "Cache-Control",
    "response-expires": "Expires",
    "response-content-language": "Content-Language",
    "response-content-encoding": "Content-Encoding",
}
_BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(slots=True)
class Reply:
    """A response to send: status, headers, and a small body or a stream (never both)."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    stream: ObjectStream | None = None


def _identity(record: FileRecord) -> list[tuple[str, str]]:
    return [
        ("ETag", f'"{record.sha256.hex}"'),
        ("Last-Modified", format_http_date(record.published_at)),
        ("Accept-Ranges", "bytes"),
        ("x-amz-meta-blake3", record.blake3.hex),
        ("x-amz-storage-class", "STANDARD"),
    ]


def _overrides(params: Mapping[str, str]) -> dict[str, str]:
    chosen: dict[str, str] = {}
    for name, header in RESPONSE_OVERRIDES.items():
        if name in params:
            value = params[name]
            if _BAD_HEADER_VALUE.search(value) or not value.isprintable():
                raise S3Error("InvalidArgument", f"{name} contains characters a header cannot")
            chosen[header] = value
    return chosen


def _check_version_params(params: Mapping[str, str]) -> bool:
    """Whether ``partNumber=1`` was asked (the whole object: nothing here is multipart)."""
    version_id = params.get("versionId")
    if version_id is not None and version_id != "null":
        raise S3Error("InvalidArgument", "versioning is not enabled: only versionId=null exists")
    part = params.get("partNumber")
    if part is None:
        return False
    if part != "1":
        raise S3Error(
            "InvalidPartNumber",
            "The requested partnumber is not satisfiable",
            status=416,
        )
    return True


async def object_reply(
    catalog: Catalog,
    record: FileRecord,
    *,
    method: str,
    headers: Mapping[str, str],
    params: Mapping[str, str],
) -> Reply:
    """The 200/206/304 reply for one object (GET opens the stream; HEAD never does).

    ``headers`` are the request's, lower-cased names.

    Raises:
        S3Error: ``PreconditionFailed`` (412), ``InvalidRange`` (416),
            ``InvalidArgument`` for a bad override, version or part number.
    """
    out = _identity(record)
    etag = out[0][1]
    whole_part = _check_version_params(params)
    status = evaluate_preconditions(method, headers, etag, record.published_at)
    if status == 412:  # noqa: PLR2004 - RFC 9110 status
        raise S3Error("PreconditionFailed", extra={"Condition": "If-Match"})
    if status is not None:
        return Reply(status, out)
    overrides = _overrides(params)
    byte_range = None if whole_part else parse_range_header(headers.get("range"))
    if byte_range is not None and not if_range_allows(headers, etag, record.published_at):
        byte_range = None
    try:
        resolved = resolve_range(byte_range, record.size)
    except InvalidRangeError:
        raise S3Error(
            "InvalidRange",
            extra={
                "RangeRequested": headers.get("range", ""),
                "ActualObjectSize": str(record.size),
            },
        ) from None
    code = 200
    if byte_range is not None:
        code = 206
        out.append(("Content-Range", resolved.content_range()))
    elif headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
        out.append(("x-amz-checksum-sha256", base64.b64encode(record.sha256.raw).decode()))
        out.append(("x-amz-checksum-type", "FULL_OBJECT"))
    out.append(("Content-Type", overrides.pop("Content-Type", record.media_type)))
    out.extend(overrides.items())
    out.append(("Content-Length", str(resolved.length)))
    if method == "HEAD" or resolved.length == 0:
        return Reply(code, out)
    stream = await catalog.open_blob(record.sha256, SliceByteRange(resolved.start, resolved.end))
    return Reply(code, out, stream=stream)
