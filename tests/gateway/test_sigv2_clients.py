"""SigV2 against the real gateway server: boto3's default presigned URLs, legacy signing, s3cmd.

boto3 (botocore 1.40 here) presigns S3 URLs with SigV2 query auth when the
client has no explicit ``signature_version`` (``_default_s3_presign_to_sigv2``),
even though its requests use SigV4; ``Config(signature_version="s3")`` signs
every request with ``HmacV1Auth`` (``Authorization: AWS key:sig``). The
virtual-hosted tests keep boto3's signing and send its request to the
loopback server with the ``Host`` it chose (``*.localhost`` does not resolve
everywhere).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from email.utils import formatdate
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
from botocore.auth import AUTH_TYPE_MAPS, HmacV1Auth, HmacV1QueryAuth
from botocore.awsrequest import AWSRequest, AWSResponse, HTTPHeaders
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from tests.gateway.support import ACCESS_KEY, SECRET_KEY, RawBody

if TYPE_CHECKING:
    from pathlib import Path

    from mypy_boto3_s3 import S3Client
    from tests.gateway.support import DataSet

KEYS = ["1.0.0/README.md", "1.0.0/docs/a b+c.txt", "1.0.0/docs/\u00e9t\u00e9.txt"]
DISPOSITION = 'attachment; filename="a b+c \u00e9.txt"'
CREDS = Credentials(ACCESS_KEY, SECRET_KEY)


def _client(gateway_url: str, config: Config | None = None, **kwargs: Any) -> S3Client:
    args: dict[str, Any] = {
        "endpoint_url": gateway_url,
        "aws_access_key_id": ACCESS_KEY,
        "aws_secret_access_key": SECRET_KEY,
        "region_name": "us-east-1",
    }
    args.update(kwargs)
    if config is not None:
        args["config"] = config
    return boto3.client("s3", **args)


def _code(reply: httpx.Response) -> str:
    assert reply.headers["content-type"] == "application/xml"
    text = reply.text
    return text[text.index("<Code>") + 6 : text.index("</Code>")]


def test_default_boto3_presigned_urls_are_sigv2_and_served(
    gateway_url: str, dataset: DataSet
) -> None:
    """boto3's default presigned GET URL in us-east-1 (SigV2) is served, override included."""
    s3 = _client(gateway_url)  # no Config at all: what a user writes
    for key in KEYS:
        url = s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": "demo", "Key": key, "ResponseContentDisposition": DISPOSITION},
            ExpiresIn=300,
        )
        query = urlsplit(url).query
        assert "AWSAccessKeyId=" in query
        assert "Signature=" in query
        assert "Expires=" in query
        assert "X-Amz-" not in query  # botocore's default really is SigV2 here
        got = httpx.get(url)
        assert got.status_code == 200, got.text
        assert got.content == dataset.objects[("demo", key)]
        assert got.headers["content-disposition"] == DISPOSITION


def test_legacy_s3_signature_version_presigns_and_signs(gateway_url: str, dataset: DataSet) -> None:
    """Config(signature_version="s3"): presigned GET/HEAD URLs and HmacV1Auth calls all work."""
    assert AUTH_TYPE_MAPS["s3"] is HmacV1Auth
    s3 = _client(gateway_url, Config(signature_version="s3", s3={"addressing_style": "path"}))
    seen: list[str] = []

    def record(request: Any, **_: object) -> None:
        value = request.headers["Authorization"]
        seen.append(value.decode() if isinstance(value, bytes) else value)

    s3.meta.events.register("before-send.s3", record)
    for key in KEYS:
        body = dataset.objects[("demo", key)]
        got = s3.get_object(Bucket="demo", Key=key, ResponseContentDisposition=DISPOSITION)
        assert got["Body"].read() == body
        assert got["ContentDisposition"].startswith('attachment; filename="a b+c ')
        assert s3.head_object(Bucket="demo", Key=key)["ContentLength"] == len(body)
        for method in ("get_object", "head_object"):
            url = s3.generate_presigned_url(method, Params={"Bucket": "demo", "Key": key})
            reply = httpx.request("GET" if method == "get_object" else "HEAD", url)
            assert reply.status_code == 200, reply.text
    listed = s3.list_objects_v2(Bucket="demo", Prefix="2.0.0/")
    assert [o["Key"] for o in listed["Contents"]] == dataset.keys("demo")[-2:]
    assert s3.get_bucket_location(Bucket="demo").get("LocationConstraint") is None  # ?location
    assert seen
    assert all(value.startswith(f"AWS {ACCESS_KEY}:") for value in seen)


def _to_loopback(port: int) -> Any:
    """A before-send handler: send boto3's signed request to 127.0.0.1, keeping its Host."""

    def send(request: Any, **_: object) -> AWSResponse:
        parts = urlsplit(request.url)
        headers = {
            k: (v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()
        }
        headers["Host"] = parts.netloc
        url = f"http://127.0.0.1:{port}{parts.path}" + (f"?{parts.query}" if parts.query else "")
        got = httpx.request(request.method, url, headers=headers)
        answer_headers = HTTPHeaders()
        for name, value in got.headers.items():
            answer_headers[name] = value
        return AWSResponse(request.url, got.status_code, answer_headers, RawBody(got.content))

    return send


def test_virtual_hosted_sigv2_requests_and_urls(gateway_url: str, dataset: DataSet) -> None:
    """Virtual-hosted SigV2 (header and presigned) verifies with the bucket taken from Host."""
    port = httpx.URL(gateway_url).port
    assert port is not None
    s3 = _client(
        f"http://s3.localhost:{port}",
        Config(signature_version="s3", s3={"addressing_style": "virtual"}),
    )
    s3.meta.events.register("before-send.s3", _to_loopback(port))
    for key in KEYS:
        got = s3.get_object(Bucket="demo", Key=key, ResponseContentDisposition=DISPOSITION)
        assert got["Body"].read() == dataset.objects[("demo", key)]
        assert s3.head_object(Bucket="demo", Key=key)["ContentLength"] == len(
            dataset.objects[("demo", key)]
        )
        url = s3.generate_presigned_url("get_object", Params={"Bucket": "demo", "Key": key})
        parts = urlsplit(url)
        assert parts.netloc == f"demo.s3.localhost:{port}"
        reply = httpx.get(
            f"{gateway_url}{parts.path}?{parts.query}", headers={"Host": parts.netloc}
        )
        assert reply.status_code == 200, reply.text
        assert reply.content == dataset.objects[("demo", key)]
    assert s3.list_objects_v2(Bucket="demo", Prefix="2.0.0/")["KeyCount"] == 2


def _presigned(gateway_url: str, key: str, auth: HmacV1QueryAuth) -> str:
    request = AWSRequest("GET", f"{gateway_url}/demo/{key}")
    auth.add_auth(request)
    return str(request.url)


def test_tampered_foreign_and_unknown_signatures_are_refused(
    gateway_url: str, dataset: DataSet
) -> None:
    """A flipped signature, one moved to another key or override, or an unknown key is refused."""
    s3 = _client(gateway_url)
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "demo", "Key": "1.0.0/README.md"}, ExpiresIn=300
    )
    head, sig = url.split("Signature=")
    flipped = f"{head}Signature={'B' if sig[0] == 'A' else 'A'}{sig[1:]}"
    assert _code(httpx.get(flipped)) == "SignatureDoesNotMatch"
    other = url.replace("README.md", "empty.txt")
    reply = httpx.get(other)
    assert (reply.status_code, _code(reply)) == (403, "SignatureDoesNotMatch")
    with_override = s3.generate_presigned_url(
        "get_object",
        Params={"Bucket": "demo", "Key": "1.0.0/README.md", "ResponseContentType": "text/plain"},
    )
    assert _code(httpx.get(with_override.replace("text%2Fplain", "text%2Fhtml"))) == (
        "SignatureDoesNotMatch"
    )
    wrong_secret = _client(gateway_url, aws_secret_access_key=SECRET_KEY + "x")
    bad = wrong_secret.generate_presigned_url(
        "get_object", Params={"Bucket": "demo", "Key": "1.0.0/README.md"}
    )
    assert _code(httpx.get(bad)) == "SignatureDoesNotMatch"
    nobody = _client(gateway_url, aws_access_key_id="nobody")
    unknown = nobody.generate_presigned_url(
        "get_object", Params={"Bucket": "demo", "Key": "1.0.0/README.md"}
    )
    reply = httpx.get(unknown)
    assert (reply.status_code, _code(reply)) == (403, "InvalidAccessKeyId")
    legacy = _client(gateway_url, Config(signature_version="s3", retries={"max_attempts": 1}))
    nobody_legacy = _client(
        gateway_url,
        Config(signature_version="s3", retries={"max_attempts": 1}),
        aws_access_key_id="nobody",
    )
    with pytest.raises(ClientError) as caught:
        nobody_legacy.get_object(Bucket="demo", Key="1.0.0/README.md")
    assert caught.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    assert legacy.get_object(Bucket="demo", Key="1.0.0/empty.txt")["Body"].read() == b""


def test_expired_sigv2_url_is_access_denied(gateway_url: str, dataset: DataSet) -> None:
    """A SigV2 URL whose Expires has passed is AccessDenied "Request has expired"."""
    url = _presigned(gateway_url, "1.0.0/README.md", HmacV1QueryAuth(CREDS, expires=-60))
    reply = httpx.get(url)
    assert (reply.status_code, _code(reply)) == (403, "AccessDenied")
    assert "<Message>Request has expired</Message>" in reply.text
    assert "<Expires>" in reply.text
    assert "<ServerTime>" in reply.text
    fresh = _presigned(gateway_url, "1.0.0/README.md", HmacV1QueryAuth(CREDS, expires=60))
    assert httpx.get(fresh).content == dataset.objects[("demo", "1.0.0/README.md")]


class _SkewedAuth(HmacV1Auth):
    """HmacV1Auth whose clock is ``offset`` seconds off."""

    def __init__(self, credentials: Credentials, offset: float) -> None:
        super().__init__(credentials)
        self.offset = offset

    def _get_date(self) -> str:
        return formatdate(time.time() + self.offset, usegmt=True)


def _header_signed(
    gateway_url: str,
    auth: HmacV1Auth,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    request = AWSRequest(method, f"{gateway_url}/demo/1.0.0/README.md", headers=headers or {})
    auth.add_auth(request)
    sent = dict(request.headers.items())
    return httpx.request(method, str(request.url), headers=sent)


def test_header_date_skew_is_refused(gateway_url: str, dataset: DataSet) -> None:
    """Authorization: AWS with a Date 20 minutes off is RequestTimeTooSkewed; x-amz-date wins."""
    body = dataset.objects[("demo", "1.0.0/README.md")]
    assert _header_signed(gateway_url, _SkewedAuth(CREDS, 0)).content == body
    assert _header_signed(gateway_url, _SkewedAuth(CREDS, 0), method="HEAD").status_code == 200
    for offset in (-1200, 1200):
        reply = _header_signed(gateway_url, _SkewedAuth(CREDS, offset))
        assert (reply.status_code, _code(reply)) == (403, "RequestTimeTooSkewed")
    stale = formatdate(time.time() - 1200, usegmt=True)
    reply = _header_signed(gateway_url, _SkewedAuth(CREDS, 0), headers={"x-amz-date": stale})
    assert _code(reply) == "RequestTimeTooSkewed"
    fresh = formatdate(time.time(), usegmt=True)
    rescued = _header_signed(gateway_url, _SkewedAuth(CREDS, -1200), headers={"x-amz-date": fresh})
    assert rescued.content == body


def test_s3cmd_with_signature_v2(
    client_env: dict[str, str], gateway_url: str, dataset: DataSet, tmp_path: Path
) -> None:
    """``s3cmd`` with ``signature_v2 = True`` lists and downloads byte-exact (keys with spaces)."""
    s3cmd = shutil.which("s3cmd")
    if s3cmd is None:
        pytest.skip("s3cmd is not installed (the test dependency group has it)")
    host = gateway_url.removeprefix("http://")
    config = tmp_path / "s3cfg"
    config.write_text(
        f"[default]\naccess_key = {ACCESS_KEY}\nsecret_key = {SECRET_KEY}\n"
        f"host_base = {host}\nhost_bucket = {host}\nuse_https = False\n"
        "signature_v2 = True\nbucket_location = us-east-1\n",
        encoding="utf-8",
    )
    base = [s3cmd, "-c", str(config), "--debug"]

    def run(*args: str) -> str:
        done = subprocess.run(
            [*base, *args], env=client_env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, f"s3cmd failed:\n{done.stdout}\n{done.stderr[-3000:]}"
        assert "AWS4-HMAC-SHA256" not in done.stderr  # really SigV2
        return done.stdout

    assert "s3://demo/1.0.0/README.md" in run("ls", "s3://demo/1.0.0/")
    for key in ("1.0.0/docs/a b+c.txt", "1.0.0/dist/app.tar.gz"):
        target = tmp_path / key.replace("/", "_")
        run("get", f"s3://demo/{key}", str(target))
        assert target.read_bytes() == dataset.objects[("demo", key)]
