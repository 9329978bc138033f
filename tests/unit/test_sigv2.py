"""SigV2 verification: the string to sign against botocore's HmacV1Auth, the AWS examples, refusals.

The two worked examples are from the Amazon S3 developer guide ("Signing
and authenticating REST requests", example credentials AKIAIOSFODNN7EXAMPLE),
reproduced with attribution.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

import pytest
from botocore.auth import HmacV1Auth, HmacV1QueryAuth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from artifactstore.gateway.sigbase import Scheme, SignatureError, detect_scheme, has_signature
from artifactstore.gateway.sigv2 import (
    VerifiedV2,
    canonical_amz_headers,
    canonical_resource,
    sign,
    string_to_sign,
    verify_v2,
)

if TYPE_CHECKING:
    from botocore.auth import BaseSigner

KEY = "reader"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
CREDS = Credentials(KEY, SECRET)
NOW = datetime(2026, 3, 14, 12, 0, 0, tzinfo=UTC)
HTTP_NOW = formatdate(NOW.timestamp(), usegmt=True)
EXPIRES = int(NOW.timestamp()) + 600


class _FixedHeaderAuth(HmacV1Auth):
    """botocore's header signer with the clock at ``date``."""

    def __init__(self, credentials: Credentials, date: str = HTTP_NOW) -> None:
        super().__init__(credentials)
        self._date = date

    def _get_date(self) -> str:
        return self._date


class _FixedQueryAuth(HmacV1QueryAuth):
    """botocore's presigner with a fixed ``Expires``."""

    def __init__(self, credentials: Credentials, expires_at: int = EXPIRES) -> None:
        super().__init__(credentials)
        self._at = expires_at

    def _get_date(self) -> str:
        return str(self._at)


def _lookup(key: str) -> str | None:
    return SECRET if key == KEY else None


def _wire(
    url: str, auth: BaseSigner, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[str, str, str, list[tuple[str, str]]]:
    """Sign with botocore and return (method, path, query, headers) as they go on the wire."""
    request = AWSRequest(method=method, url=url, headers=headers or {})
    parts = urlsplit(url)
    host = parts.hostname or ""
    bucket = host.split(".")[0] if host != "127.0.0.1" else None
    if bucket is not None:  # virtual host: botocore signs the path-style path
        request.auth_path = f"/{bucket}{parts.path or '/'}"
    auth.add_auth(request)
    prepared = request.prepare()
    sent = urlsplit(prepared.url)
    return method, sent.path, sent.query, [("Host", sent.netloc), *prepared.headers.items()]


def _verify(
    wire: tuple[str, str, str, list[tuple[str, str]]],
    *,
    bucket: str | None = None,
    now: datetime = NOW,
) -> VerifiedV2:
    method, path, query, headers = wire
    return verify_v2(method, path, query, headers, _lookup, now=now, bucket_in_host=bucket)


# --- the string to sign, against botocore ----------------------------------

CASES = [
    ("GET", "/pkg/1.0/a.txt", "", {}),
    ("HEAD", "/pkg/1.0/a%20b%2Bc.txt", "", {}),
    ("GET", "/pkg/1.0/%C3%A9t%C3%A9.txt", "", {}),
    ("GET", "/pkg", "acl", {}),
    ("GET", "/pkg/", "location", {}),
    ("GET", "/pkg/k", "versionId=null", {}),
    ("GET", "/pkg/k", "uploads", {}),
    ("GET", "/pkg/k", "uploadId=abc&partNumber=2", {}),
    ("GET", "/pkg/k", "tagging&versionId=3", {}),
    ("GET", "/pkg", "list-type=2&prefix=a%20b&delimiter=%2F", {}),
    (
        "GET",
        "/pkg/k",
        (
            "response-content-disposition=attachment%3B%20filename%3D%22a%20b%2Bc.txt%22"
            "&response-content-type=text%2Fplain&response-cache-control=no-cache"
            "&response-expires=Thu%2C%2001%20Jan%202030%2000%3A00%3A00%20GMT"
            "&response-content-language=fr&response-content-encoding=identity"
        ),
        {},
    ),
    ("GET", "/pkg/k", "response-content-disposition=%C3%A9t%C3%A9", {}),
    (
        "GET",
        "/pkg/k",
        "",
        {
            "Content-Type": "text/plain",
            "Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg==",
            "X-Amz-Meta-B": " two ",
            "x-amz-meta-a": "one",
        },
    ),
]


@pytest.mark.parametrize(("method", "path", "query", "headers"), CASES)
@pytest.mark.parametrize("bucket", [None, "pkg"])
def test_string_to_sign_matches_botocore(
    method: str, path: str, query: str, headers: dict[str, str], bucket: str | None
) -> None:
    """The string to sign equals HmacV1Auth.canonical_string, path-style and virtual-hosted."""
    auth = _FixedHeaderAuth(CREDS)
    url = f"http://127.0.0.1:9000{path}" + (f"?{query}" if query else "")
    auth_path = None
    wire_path = path
    if bucket is not None:
        wire_path = path.removeprefix(f"/{bucket}") or "/"
        url = f"http://{bucket}.localhost:9000{wire_path}" + (f"?{query}" if query else "")
        auth_path = path if path != f"/{bucket}" else f"/{bucket}/"
    http_headers = HTTPHeaders()
    for name, value in headers.items():
        http_headers[name] = value
    # The stubs say Mapping; botocore needs HTTPHeaders (it calls get_all).
    expected = auth.canonical_string(
        method,
        urlsplit(url),
        http_headers,  # type: ignore[arg-type]
        auth_path=auth_path,
    )
    lowered = {n.lower(): v.strip() for n, v in headers.items()}
    ours = string_to_sign(
        method,
        content_md5=lowered.get("content-md5", ""),
        content_type=lowered.get("content-type", ""),
        date=HTTP_NOW,
        amz_headers=canonical_amz_headers(headers.items()),
        resource=canonical_resource(wire_path, query, bucket_in_host=bucket),
    )
    assert ours == expected


@pytest.mark.parametrize(("method", "path", "query", "headers"), CASES)
def test_botocore_signed_requests_verify(
    method: str, path: str, query: str, headers: dict[str, str]
) -> None:
    """Every case signed by HmacV1Auth (header) and HmacV1QueryAuth (URL) verifies."""
    url = f"http://127.0.0.1:9000{path}" + (f"?{query}" if query else "")
    signed = _wire(url, _FixedHeaderAuth(CREDS), method=method, headers=headers)
    assert _verify(signed) == VerifiedV2(KEY, presigned=False)
    presigned = _wire(url, _FixedQueryAuth(CREDS), method=method, headers=headers)
    assert _verify(presigned) == VerifiedV2(KEY, presigned=True)


def test_virtual_hosted_requests_verify_with_the_bucket_in_the_resource() -> None:
    """A virtual-hosted request verifies only when the bucket from Host is in the resource."""
    for url in ("http://pkg.localhost:9000/1.0/a%20b.txt", "http://pkg.s3.localhost:9000/"):
        for auth in (_FixedHeaderAuth(CREDS), _FixedQueryAuth(CREDS)):
            wire = _wire(url, auth)
            assert _verify(wire, bucket="pkg").access_key_id == KEY
            with pytest.raises(SignatureError) as info:
                _verify(wire)
            assert info.value.code == "SignatureDoesNotMatch"


def test_path_style_bucket_request_signed_with_trailing_slash_verifies() -> None:
    """boto3 signs a path-style bucket request ``/pkg?list-type=2`` as ``/pkg/``: accepted."""
    request = AWSRequest(method="GET", url="http://127.0.0.1:9000/pkg?list-type=2&prefix=a")
    request.auth_path = "/pkg/"  # what botocore's S3 handlers set for a bucket operation
    _FixedHeaderAuth(CREDS).add_auth(request)
    prepared = request.prepare()
    sent = urlsplit(prepared.url)
    headers = [("Host", sent.netloc), *prepared.headers.items()]
    assert _verify(("GET", sent.path, sent.query, headers)).access_key_id == KEY
    with pytest.raises(SignatureError):  # only a bare bucket gets the slash
        _verify(("GET", "/pkg/k", sent.query, headers))


def test_aws_developer_guide_examples() -> None:
    """The S3 developer guide's GET examples (header and query string) verify."""
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    header_form = "GET\n\n\nTue, 27 Mar 2007 19:36:42 +0000\n/johnsmith/photos/puppy.jpg"
    assert sign(secret, header_form) == "bWq2s1WEIj+Ydj0vQ697zp+IXMU="
    query_form = "GET\n\n\n1175139620\n/johnsmith/photos/puppy.jpg"
    assert sign(secret, query_form) == "NpgCjnDzrM+WFzoENXmpNDUsSn8="
    verified = verify_v2(
        "GET",
        "/photos/puppy.jpg",
        "AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires=1175139620"
        "&Signature=NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D",
        [("Host", "johnsmith.s3.amazonaws.com")],
        {"AKIAIOSFODNN7EXAMPLE": secret}.get,
        now=datetime(2007, 3, 27, 19, 36, 42, tzinfo=UTC),
        bucket_in_host="johnsmith",
    )
    assert verified.presigned


_segment = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="/\x00"),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(segments=st.lists(_segment, min_size=1, max_size=4), disposition=st.text(max_size=20))
def test_arbitrary_keys_and_overrides_verify(segments: list[str], disposition: str) -> None:
    """Any key and override value quoted as botocore's serializer does verifies, both forms."""
    path = "/pkg/" + "/".join(quote(s, safe="~") for s in segments)
    url = f"http://127.0.0.1:9000{path}?response-content-disposition={quote(disposition, '~')}"
    assert _verify(_wire(url, _FixedHeaderAuth(CREDS))).access_key_id == KEY
    assert _verify(_wire(url, _FixedQueryAuth(CREDS))).presigned


# --- refusals ----------------------------------------------------------------


def _code(wire: tuple[str, str, str, list[tuple[str, str]]], **kwargs: object) -> str:
    with pytest.raises(SignatureError) as info:
        _verify(wire, **kwargs)  # type: ignore[arg-type]
    return info.value.code


def test_tampered_query_signature_path_and_override_are_refused() -> None:
    """A changed signature, path, method or override does not match; prefix is not signed."""
    method, path, query, headers = _wire(
        "http://127.0.0.1:9000/pkg/k?response-content-type=text%2Fplain", _FixedQueryAuth(CREDS)
    )
    flipped = query.replace(
        "Signature=", "Signature=A" if "Signature=B" in query else "Signature=B"
    )
    assert _code((method, path, flipped, headers)) == "SignatureDoesNotMatch"
    assert _code((method, "/pkg/other", query, headers)) == "SignatureDoesNotMatch"
    assert _code((method, path, query.replace("text%2Fplain", "text%2Fhtml"), headers)) == (
        "SignatureDoesNotMatch"
    )
    assert _code(("HEAD", path, query, headers)) == "SignatureDoesNotMatch"
    assert _verify((method, path, query + "&prefix=x", headers)).presigned


def test_wrong_secret_and_unknown_key() -> None:
    """A wrong secret is SignatureDoesNotMatch; an unknown key id InvalidAccessKeyId."""
    wrong = _wire("http://127.0.0.1:9000/pkg/k", _FixedHeaderAuth(Credentials(KEY, "nope")))
    assert _code(wrong) == "SignatureDoesNotMatch"
    unknown = _wire("http://127.0.0.1:9000/pkg/k", _FixedQueryAuth(Credentials("nobody", SECRET)))
    with pytest.raises(SignatureError) as info:
        _verify(unknown)
    assert info.value.code == "InvalidAccessKeyId"
    assert info.value.extra == {"AWSAccessKeyId": "nobody"}


def test_expired_url_is_access_denied_with_times() -> None:
    """A URL past its Expires is AccessDenied "Request has expired" with Expires and ServerTime."""
    wire = _wire("http://127.0.0.1:9000/pkg/k", _FixedQueryAuth(CREDS, expires_at=EXPIRES))
    assert _verify(wire, now=NOW + timedelta(seconds=600)).presigned  # the last valid second
    with pytest.raises(SignatureError) as info:
        _verify(wire, now=NOW + timedelta(seconds=601))
    assert (info.value.code, info.value.message) == ("AccessDenied", "Request has expired")
    assert info.value.extra["Expires"] == "2026-03-14T12:10:00Z"
    assert info.value.extra["ServerTime"] == "2026-03-14T12:10:01Z"


def test_header_date_skew_and_x_amz_date_override() -> None:
    """Date more than 15 minutes off is RequestTimeTooSkewed; x-amz-date overrides Date."""
    stale = formatdate((NOW - timedelta(minutes=16)).timestamp(), usegmt=True)
    assert _code(_wire("http://127.0.0.1:9000/pkg/k", _FixedHeaderAuth(CREDS, stale))) == (
        "RequestTimeTooSkewed"
    )
    near = formatdate((NOW - timedelta(minutes=14)).timestamp(), usegmt=True)
    near_wire = _wire("http://127.0.0.1:9000/pkg/k", _FixedHeaderAuth(CREDS, near))
    assert _verify(near_wire).access_key_id == KEY
    # A fresh x-amz-date rescues a stale Date, and a stale one condemns a fresh Date.
    fresh_amz = _wire(
        "http://127.0.0.1:9000/pkg/k",
        _FixedHeaderAuth(CREDS, stale),
        headers={"x-amz-date": HTTP_NOW},
    )
    assert _verify(fresh_amz).access_key_id == KEY
    stale_amz = _wire(
        "http://127.0.0.1:9000/pkg/k", _FixedHeaderAuth(CREDS), headers={"x-amz-date": stale}
    )
    assert _code(stale_amz) == "RequestTimeTooSkewed"


def test_x_amz_date_with_an_empty_date_line_verifies() -> None:
    """Per the spec, a request with x-amz-date and no Date signs an empty Date line."""
    to_sign = f"GET\n\n\n\nx-amz-date:{HTTP_NOW}\n/pkg/k"
    authorization = f"AWS {KEY}:{sign(SECRET, to_sign)}"
    headers = [("Host", "h"), ("x-amz-date", HTTP_NOW), ("Authorization", authorization)]
    assert verify_v2("GET", "/pkg/k", "", headers, _lookup, now=NOW).access_key_id == KEY


def test_unencoded_plus_in_signature_is_read_back() -> None:
    """A Signature whose '+' was not percent-encoded (read as a space) still verifies."""
    to_sign = f"GET\n\n\n{EXPIRES}\n/pkg/k"
    for secret in (SECRET, SECRET + "1", SECRET + "2", SECRET + "3"):
        if "+" in sign(secret, to_sign):
            break
    sig = sign(secret, to_sign)
    assert "+" in sig
    query = f"AWSAccessKeyId={KEY}&Expires={EXPIRES}&Signature={sig}"
    lookup = {KEY: secret}.get
    assert verify_v2("GET", "/pkg/k", query, [("Host", "h")], lookup, now=NOW).presigned


@pytest.mark.parametrize(
    ("query", "authorization", "code"),
    [
        ("AWSAccessKeyId=reader&Signature=x", None, "AccessDenied"),  # no Expires
        ("AWSAccessKeyId=reader&Expires=1", None, "AccessDenied"),  # no Signature
        ("Signature=x&Expires=99999999999", None, "AccessDenied"),  # no key id
        ("AWSAccessKeyId=reader&Signature=x&Expires=soon", None, "AccessDenied"),
        ("AWSAccessKeyId=reader&Signature=x&Signature=y&Expires=99999999999", None, "AccessDenied"),
        ("", "AWS reader", "InvalidArgument"),
        ("", "AWS :sig", "InvalidArgument"),
        ("", "AWS reader:", "InvalidArgument"),
    ],
)
def test_malformed_sigv2_is_refused(query: str, authorization: str | None, code: str) -> None:
    """Missing, repeated or malformed SigV2 parameters or headers are refused, never anonymous."""
    headers = [("Host", "h"), ("Date", HTTP_NOW)]
    if authorization is not None:
        headers.append(("Authorization", authorization))
    assert has_signature(query, headers)
    with pytest.raises(SignatureError) as info:
        verify_v2("GET", "/pkg/k", query, headers, _lookup, now=NOW)
    assert info.value.code == code


def test_header_form_needs_a_date() -> None:
    """An Authorization: AWS header without Date or x-amz-date is AccessDenied."""
    headers = [("Host", "h"), ("Authorization", "AWS reader:c2lnbmF0dXJl")]
    with pytest.raises(SignatureError) as info:
        verify_v2("GET", "/pkg/k", "", headers, _lookup, now=NOW)
    assert info.value.code == "AccessDenied"


@pytest.mark.parametrize(
    ("query", "headers", "scheme"),
    [
        ("", [], Scheme.NONE),
        ("prefix=a&Expires=1", [], Scheme.NONE),
        ("AWSAccessKeyId=a&Signature=b&Expires=1", [], Scheme.V2_QUERY),
        ("", [("Authorization", "AWS a:b")], Scheme.V2_HEADER),
        ("", [("Authorization", "AWS4-HMAC-SHA256 Credential=x")], Scheme.V4_HEADER),
        ("", [("Authorization", "Bearer x")], Scheme.V4_HEADER),
        ("X-Amz-Signature=x", [], Scheme.V4_QUERY),
    ],
)
def test_detect_scheme(query: str, headers: list[tuple[str, str]], scheme: Scheme) -> None:
    """detect_scheme names the one scheme a request uses (unknown headers go to SigV4's parser)."""
    assert detect_scheme(query, headers) is scheme


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("AWSAccessKeyId=a&Signature=b&Expires=1", [("Authorization", "AWS a:b")]),
        ("AWSAccessKeyId=a&Signature=b&X-Amz-Signature=c", []),
        ("X-Amz-Credential=x", [("Authorization", "AWS a:b")]),
    ],
)
def test_two_schemes_at_once_is_invalid_argument(
    query: str, headers: list[tuple[str, str]]
) -> None:
    """A request that mixes SigV2 and SigV4, or header and query, is InvalidArgument."""
    with pytest.raises(SignatureError) as info:
        detect_scheme(query, headers)
    assert info.value.code == "InvalidArgument"
