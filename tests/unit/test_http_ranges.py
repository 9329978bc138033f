"""Range parsing and conditional requests per RFC 9110, shared by the REST API and the gateway."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from artifactstore import http_ranges
from artifactstore.errors import InvalidRangeError
from artifactstore.http_ranges import (
    evaluate_preconditions,
    format_http_date,
    if_range_allows,
    parse_http_date,
    parse_range_header,
)
from artifactstore.storage.spi import (
    OffsetByteRange,
    SliceByteRange,
    SuffixByteRange,
    resolve_range,
)

ETAG = '"' + "ab" * 32 + '"'
MODIFIED = datetime(1994, 11, 6, 8, 49, 37, 250_000, tzinfo=UTC)
IMF = "Sun, 06 Nov 1994 08:49:37 GMT"
EARLIER = "Sun, 06 Nov 1994 08:49:36 GMT"
LATER = "Sun, 06 Nov 1994 08:49:38 GMT"


# --- Range ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-499", SliceByteRange(0, 500)),
        ("bytes=500-999", SliceByteRange(500, 1000)),
        ("bytes=7-7", SliceByteRange(7, 8)),
        ("bytes=9500-", OffsetByteRange(9500)),
        ("bytes=-500", SuffixByteRange(500)),
        ("bytes=-0", SuffixByteRange(0)),
        ("BYTES=0-1", SliceByteRange(0, 2)),
        ("  bytes=0-1  ", SliceByteRange(0, 2)),
        ("bytes = 0 - 1", SliceByteRange(0, 2)),
    ],
)
def test_single_ranges_parse(header: str, expected: object) -> None:
    """Each single byte-range form maps to its SPI type, with an exclusive slice end."""
    assert parse_range_header(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes=",
        "bytes=-",
        "bytes=5-4",  # last-pos below first-pos: invalid, ignored (RFC 9110 14.1.1)
        "bytes=0-1,3-4",  # several ranges: served whole
        "bytes=0-1, -5",
        "items=0-1",
        "bytes=a-b",
        "bytes=0x1-2",
        "bytes=1.5-2",
        "0-1",
        "bytes 0-1",
        "bytes=--1",
        "bytes=" + "9" * 30 + "-",
        "bytes=\u0661-\u0662",  # Arabic-Indic digits are not DIGIT
    ],
)
def test_unusable_ranges_are_ignored(header: str | None) -> None:
    """Absent, malformed, invalid, foreign-unit and multi-range headers yield None (serve whole)."""
    assert parse_range_header(header) is None


def test_unsatisfiable_range_parses_then_resolves_to_416() -> None:
    """A well-formed range past the end parses; resolve_range then raises InvalidRangeError."""
    parsed = parse_range_header("bytes=100-200")
    assert parsed == SliceByteRange(100, 201)
    with pytest.raises(InvalidRangeError):
        resolve_range(parsed, 50)
    with pytest.raises(InvalidRangeError):
        resolve_range(parse_range_header("bytes=-0"), 50)


def test_range_past_end_is_clamped() -> None:
    """A slice that runs past the end is clamped to the object (RFC 9110 14.1.2)."""
    resolved = resolve_range(parse_range_header("bytes=40-200"), 50)
    assert (resolved.start, resolved.end) == (40, 50)
    assert resolved.content_range() == "bytes 40-49/50"


@given(st.integers(0, 10**12), st.integers(0, 10**12))
def test_slice_round_trip(first: int, last: int) -> None:
    """bytes=a-b parses to [a, b+1) whenever b >= a and is ignored otherwise."""
    parsed = parse_range_header(f"bytes={first}-{last}")
    assert parsed == (SliceByteRange(first, last + 1) if last >= first else None)


@given(st.text(max_size=30))
def test_parse_never_raises(header: str) -> None:
    """Any header text yields a byte range or None, never an exception."""
    result = parse_range_header(header)
    assert result is None or isinstance(result, SliceByteRange | OffsetByteRange | SuffixByteRange)


# --- HTTP dates ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850
        "Sun Nov  6 08:49:37 1994",  # obsolete asctime
    ],
)
def test_three_http_date_formats(text: str) -> None:
    """The three HTTP-date formats of RFC 9110 section 5.6.7 parse to the same instant."""
    assert parse_http_date(text, now=datetime(2026, 1, 1, tzinfo=UTC)) == datetime(
        1994, 11, 6, 8, 49, 37, tzinfo=UTC
    )


def test_rfc850_two_digit_year_window() -> None:
    """A two-digit year more than 50 years ahead is read as the previous century."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_http_date("Monday, 01-Jan-74 00:00:00 GMT", now=now) == datetime(
        2074, 1, 1, tzinfo=UTC
    )
    assert parse_http_date("Friday, 01-Jan-77 00:00:00 GMT", now=now) == datetime(
        1977, 1, 1, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2026-01-01T00:00:00Z",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 25:49:37 GMT",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT",
    ],
)
def test_invalid_http_dates(text: str) -> None:
    """Anything that is not an HTTP-date gives None."""
    assert parse_http_date(text) is None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC).replace(tzinfo=None)  # hypothesis bounds are naive
_LAST = datetime(9999, 1, 1, tzinfo=UTC).replace(tzinfo=None)


@given(st.datetimes(min_value=_EPOCH, max_value=_LAST))
def test_http_date_round_trip(value: datetime) -> None:
    """format_http_date and parse_http_date round-trip at one-second resolution."""
    utc = value.replace(tzinfo=UTC, microsecond=0)
    assert parse_http_date(format_http_date(utc)) == utc


def test_format_http_date_example() -> None:
    """format_http_date writes the RFC's example IMF-fixdate."""
    assert format_http_date(MODIFIED) == IMF


# --- preconditions -------------------------------------------------------------


def _pre(headers: dict[str, str], method: str = "GET") -> int | None:
    return evaluate_preconditions(method, headers, ETAG, MODIFIED)


def test_no_conditions_proceed() -> None:
    """Without conditional headers the request proceeds."""
    assert _pre({}) is None


@pytest.mark.parametrize(
    ("if_match", "expected"),
    [
        (ETAG, None),
        ("*", None),
        (f'"x", {ETAG}', None),
        (ETAG.strip('"'), None),  # bare tags are accepted, as S3 does
        ('"other"', 412),
        (f"W/{ETAG}", 412),  # If-Match uses strong comparison
        ('"x", "y"', 412),
    ],
)
def test_if_match(if_match: str, expected: int | None) -> None:
    """If-Match compares strongly; no match is 412 (RFC 9110 13.1.1)."""
    assert _pre({"If-Match": if_match}) == expected


@pytest.mark.parametrize(
    ("if_none_match", "expected"),
    [
        (ETAG, 304),
        (f"W/{ETAG}", 304),  # If-None-Match uses weak comparison
        ("*", 304),
        (f'"x",{ETAG}', 304),
        ('"other"', None),
    ],
)
def test_if_none_match(if_none_match: str, expected: int | None) -> None:
    """If-None-Match compares weakly; a match is 304 for GET (RFC 9110 13.1.2)."""
    assert _pre({"If-None-Match": if_none_match}) == expected


def test_if_none_match_on_unsafe_method_is_412() -> None:
    """A matching If-None-Match on a method other than GET or HEAD is 412."""
    assert _pre({"If-None-Match": ETAG}, method="DELETE") == 412
    assert _pre({"If-None-Match": ETAG}, method="head") == 304


@pytest.mark.parametrize(
    ("since", "expected"),
    [(IMF, 304), (LATER, 304), (EARLIER, None), ("garbage", None)],
)
def test_if_modified_since(since: str, expected: int | None) -> None:
    """If-Modified-Since at or after the modification second is 304; invalid dates are ignored."""
    assert _pre({"If-Modified-Since": since}) == expected


def test_if_modified_since_only_for_reads() -> None:
    """If-Modified-Since is ignored for methods other than GET and HEAD."""
    assert _pre({"If-Modified-Since": LATER}, method="POST") is None


@pytest.mark.parametrize(
    ("since", "expected"),
    [(IMF, None), (LATER, None), (EARLIER, 412), ("garbage", None)],
)
def test_if_unmodified_since(since: str, expected: int | None) -> None:
    """If-Unmodified-Since before the modification second is 412; invalid dates are ignored."""
    assert _pre({"If-Unmodified-Since": since}) == expected


def test_if_match_overrides_if_unmodified_since() -> None:
    """With If-Match present, If-Unmodified-Since is not evaluated (13.2.2 step 2)."""
    assert _pre({"If-Match": ETAG, "If-Unmodified-Since": EARLIER}) is None
    assert _pre({"If-Match": '"x"', "If-Unmodified-Since": LATER}) == 412


def test_if_none_match_overrides_if_modified_since() -> None:
    """With If-None-Match present, If-Modified-Since is not evaluated (13.2.2 step 4)."""
    assert _pre({"If-None-Match": '"x"', "If-Modified-Since": LATER}) is None
    assert _pre({"If-None-Match": ETAG, "If-Modified-Since": EARLIER}) == 304


def test_412_wins_over_304() -> None:
    """A failing If-Match is reported before a matching If-None-Match (13.2.2 order)."""
    assert _pre({"If-Match": '"x"', "If-None-Match": ETAG}) == 412
    assert _pre({"If-Unmodified-Since": EARLIER, "If-Modified-Since": LATER}) == 412


def test_header_names_are_case_insensitive_and_lists_merge() -> None:
    """Header names match in any case, and repeated fields combine into one list."""
    pairs = [("if-none-match", '"x"'), ("IF-NONE-MATCH", ETAG)]
    assert evaluate_preconditions("GET", pairs, ETAG, MODIFIED) == 304


def test_naive_last_modified_is_utc() -> None:
    """A naive last-modified datetime is taken as UTC."""
    naive = MODIFIED.replace(tzinfo=None)
    assert evaluate_preconditions("GET", {"If-Modified-Since": IMF}, ETAG, naive) == 304


def test_weak_representation_etag_never_matches_if_match() -> None:
    """A weak ETag on the representation fails strong comparison even with the same tag."""
    weak = f"W/{ETAG}"
    assert evaluate_preconditions("GET", {"If-Match": weak}, weak, MODIFIED) == 412
    assert evaluate_preconditions("GET", {"If-None-Match": ETAG}, weak, MODIFIED) == 304


# --- If-Range -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("if_range", "expected"),
    [
        (None, True),
        (ETAG, True),
        ('"other"', False),
        (f"W/{ETAG}", False),  # weak tags never validate a range
        (IMF, True),
        (EARLIER, False),
        (LATER, False),  # a date must match exactly
        ("garbage", False),
    ],
)
def test_if_range(if_range: str | None, expected: bool) -> None:
    """If-Range honours the Range only for a strong ETag match or the exact date."""
    headers = {} if if_range is None else {"If-Range": if_range}
    assert if_range_allows(headers, ETAG, MODIFIED) is expected


def test_all_lists_public_names() -> None:
    """http_ranges lists every public function in __all__, and every listed name exists."""
    names = set(http_ranges.__all__)
    assert all(hasattr(http_ranges, name) for name in names)
    public = {
        name
        for name, value in vars(http_ranges).items()
        if callable(value)
        and not name.startswith("_")
        and getattr(value, "__module__", None) == http_ranges.__name__
    }
    assert public <= names


def test_dates_ignore_subsecond_precision() -> None:
    """A last-modified with milliseconds equals its HTTP-date for If-Modified-Since."""
    later_ms = MODIFIED + timedelta(milliseconds=500)
    assert evaluate_preconditions("GET", {"If-Modified-Since": IMF}, ETAG, later_ms) == 304
