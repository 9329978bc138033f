"""HTTP ``Range`` parsing and conditional-request evaluation, shared by the REST API and S3 gateway.

Owns: turning a ``Range`` header into one of the storage SPI's byte-range
types (parsed once, at the edge; ``storage.spi.resolve_range`` then decides
416), ``If-Range``, the four preconditions (``If-Match``,
``If-Unmodified-Since``, ``If-None-Match``, ``If-Modified-Since``), and
HTTP-date parsing and formatting. It does not build responses or read
bodies; callers set statuses and headers.

Spec: RFC 9110 section 14 (ranges), section 13 (conditional requests, with
the evaluation order of section 13.2.2), section 8.8.3 (entity tags and weak
versus strong comparison) and section 5.6.7 (the three HTTP-date formats).

Decisions, each allowed by RFC 9110 section 14.2 ("a server MAY ignore the
Range header field"): a header that is malformed, names another unit, or is
invalid (last-pos below first-pos) is ignored, and so is a request for
several ranges: the whole representation is served (200), which is also
what Amazon S3 does with multiple ranges. A syntactically valid range the
object cannot satisfy is returned as parsed and becomes 416 in
``resolve_range``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Final

from artifactstore.storage.spi import ByteRange, OffsetByteRange, SliceByteRange, SuffixByteRange

__all__ = [
    "HeaderInput",
    "evaluate_preconditions",
    "format_http_date",
    "if_range_allows",
    "parse_http_date",
    "parse_range_header",
]

HeaderInput = Mapping[str, str] | Iterable[tuple[str, str]]

_RANGE_RE = re.compile(r"bytes[ \t]*=[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*", re.IGNORECASE)
_MAX_DIGITS = 19  # beyond any real object size; keeps int() on hostile input cheap

_MONTHS: Final = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = r"([0-9]{2}):([0-9]{2}):([0-9]{2})"
# IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
_IMF_RE = re.compile(rf"{_DAY}, ([0-9]{{2}}) {_MONTH} ([0-9]{{4}}) {_TIME} GMT")
# obsolete RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
_RFC850_RE = re.compile(rf"{_LONG_DAY}, ([0-9]{{2}})-{_MONTH}-([0-9]{{2}}) {_TIME} GMT")
# obsolete asctime: Sun Nov  6 08:49:37 1994
_ASCTIME_RE = re.compile(rf"{_DAY} {_MONTH} ([ 0-9][0-9]) {_TIME} ([0-9]{{4}})")
_ETAG_RE = re.compile(r'\s*(W/)?("[^"]*"|[^",\s]+)\s*(?:,|$)')


def parse_range_header(value: str | None) -> ByteRange | None:
    """The single byte range a ``Range`` header asks for, or None to serve everything.

    ``bytes=a-b`` gives ``SliceByteRange(a, b + 1)`` (end exclusive),
    ``bytes=a-`` gives ``OffsetByteRange(a)``, ``bytes=-n`` gives
    ``SuffixByteRange(n)``. None for an absent, malformed, invalid (b < a),
    non-bytes or multi-range header (see the module docstring). Never raises.
    """
    m = _RANGE_RE.fullmatch(value.strip()) if value is not None else None
    if m is None or len(m.group(1)) > _MAX_DIGITS or len(m.group(2)) > _MAX_DIGITS:
        return None
    first, last = m.group(1), m.group(2)
    result: ByteRange | None = None
    if first and last:
        start, end = int(first), int(last)
        result = SliceByteRange(start, end + 1) if end >= start else None
    elif first:
        result = OffsetByteRange(int(first))
    elif last:
        result = SuffixByteRange(int(last))
    return result


def format_http_date(value: datetime) -> str:
    """IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``); a naive datetime is taken as UTC."""
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    day = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[utc.weekday()]
    month = next(name for name, number in _MONTHS.items() if number == utc.month)
    return f"{day}, {utc.day:02d} {month} {utc.year:04d} {utc:%H:%M:%S} GMT"


def parse_http_date(value: str, *, now: datetime | None = None) -> datetime | None:
    """An HTTP-date in any of the three formats of RFC 9110 section 5.6.7, as aware UTC.

    Returns None for anything else (callers then ignore the header, as the
    RFC requires). A two-digit RFC 850 year that would lie more than 50
    years after ``now`` (default: the current time) is read as the most
    recent past year with those digits.
    """
    text = value.strip()
    if m := _IMF_RE.fullmatch(text):
        day, month, year, hh, mm, ss = m.groups()
    elif m := _RFC850_RE.fullmatch(text):
        day, month, yy, hh, mm, ss = m.groups()
        current = (now or datetime.now(UTC)).year
        year_int = current - current % 100 + int(yy)
        if year_int > current + 50:
            year_int -= 100
        year = str(year_int)
    elif m := _ASCTIME_RE.fullmatch(text):
        month, day, hh, mm, ss, year = m.groups()
    else:
        return None
    try:
        return datetime(int(year), _MONTHS[month], int(day), int(hh), int(mm), int(ss), tzinfo=UTC)
    except ValueError:  # 31 Feb, hour 25, leap second 60
        return None


def _headers(headers: HeaderInput) -> dict[str, str]:
    """Lower-cased names; repeated fields joined with ``, `` (RFC 9110 section 5.3)."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    merged: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


def _parse_etags(value: str) -> list[tuple[bool, str]] | None:
    """``(weak, opaque-tag)`` pairs of an entity-tag list; None for ``*``.

    Bare, unquoted tags are accepted as strong (S3 does, and some clients send them).
    """
    if value.strip() == "*":
        return None
    return [
        (m.group(1) is not None, m.group(2).strip('"'))
        for m in _ETAG_RE.finditer(value)
        if m.group(2)
    ]


def _split_etag(etag: str) -> tuple[bool, str]:
    weak = etag.startswith("W/")
    return weak, (etag[2:] if weak else etag).strip('"')


def _match(header: str, etag: str, *, strong: bool) -> bool:
    """Whether ``etag`` is in the header's list, by strong or weak comparison (8.8.3.2)."""
    tags = _parse_etags(header)
    if tags is None:
        return True  # "*": any current representation
    ours_weak, ours = _split_etag(etag)
    if strong:
        return not ours_weak and any(not weak and tag == ours for weak, tag in tags)
    return any(tag == ours for _, tag in tags)


def _seconds(value: datetime) -> datetime:
    """HTTP dates have one-second resolution; compare at that resolution, in UTC."""
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return utc.replace(microsecond=0)


def evaluate_preconditions(
    method: str, headers: HeaderInput, etag: str, last_modified: datetime
) -> int | None:
    """The status a conditional request ends with (304 or 412), or None to proceed.

    Follows RFC 9110 section 13.2.2 for an existing representation:
    If-Match (strong comparison) false: 412; else, without If-Match,
    If-Unmodified-Since earlier than ``last_modified``: 412. Then
    If-None-Match (weak comparison) true: 304 for GET and HEAD, 412
    otherwise; else, without If-None-Match and for GET or HEAD,
    If-Modified-Since not earlier than ``last_modified``: 304. Invalid dates
    are ignored. ``etag`` is the quoted entity tag, ``last_modified`` a
    datetime (naive means UTC).
    """
    h = _headers(headers)
    read = method.upper() in {"GET", "HEAD"}
    modified = _seconds(last_modified)
    if "if-match" in h:
        if not _match(h["if-match"], etag, strong=True):
            return 412
    elif "if-unmodified-since" in h:
        since = parse_http_date(h["if-unmodified-since"])
        if since is not None and modified > since:
            return 412
    if "if-none-match" in h:
        if _match(h["if-none-match"], etag, strong=False):
            return 304 if read else 412
    elif read and "if-modified-since" in h:
        since = parse_http_date(h["if-modified-since"])
        if since is not None and modified <= since:
            return 304
    return None


def if_range_allows(headers: HeaderInput, etag: str, last_modified: datetime) -> bool:
    """Whether a ``Range`` header may be honoured given ``If-Range`` (RFC 9110 section 13.1.5).

    True without If-Range. With an entity tag: a strong match. With a date:
    exactly equal to ``last_modified`` (to the second). A weak tag, or a
    value that is neither, means serve the whole representation (False).
    """
    value = _headers(headers).get("if-range")
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        weak, tag = _split_etag(value)
        ours_weak, ours = _split_etag(etag)
        return not weak and not ours_weak and tag == ours
    since = parse_http_date(value)
    return since is not None and since == _seconds(last_modified)
