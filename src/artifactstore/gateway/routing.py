"""Which S3 operation a request names: addressing style, bucket, key, sub-resource.

Owns: reading the bucket and key from the ``Host`` header and the raw path
(path-style and virtual-host-style addressing), decoding the path exactly
once, and classifying ``(method, bucket, key, query)`` into one of the read
operations the gateway serves, or refusing it with the S3 error a client
expects: ``AccessDenied`` for writes (PUT, POST, DELETE and friends,
multipart uploads, multi-object delete), ``NotImplemented`` for
sub-resources this gateway does not model (ACL, policy, tagging, CORS,
lifecycle, versioning, ...). It does not authenticate, look anything up or
build responses.

Spec: "Virtual hosting of buckets" and the operation list of the Amazon S3
API reference. Addressing decision (documented in ``docs/GATEWAY.md``): a
``Host`` is virtual-host style when it is a DNS name (not an IP literal)
of the form ``<bucket>.<base>`` where ``<base>`` is ``localhost``, the
gateway's configured or bound host name, or any name whose first label is
``s3`` (``s3.localhost``, ``s3.example.org``, ``s3.eu-west-1.amazonaws.com``).
The ``s3.`` rule is tried first, so ``pkg.s3.localhost`` names ``pkg``. A
``Host`` that is one of those bases itself, an IP literal, or anything else
means path style. Package names may contain dots, so ``a.b.localhost``
names the bucket ``a.b``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING
from urllib.parse import unquote

from artifactstore.gateway.errors import S3Error

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "NOT_IMPLEMENTED_SUBRESOURCES",
    "WRITE_SUBRESOURCES",
    "Operation",
    "Target",
    "classify",
    "host_bases",
    "resolve_target",
]

#: Sub-resources S3 has and this gateway does not model: NotImplemented on any method.
NOT_IMPLEMENTED_SUBRESOURCES = frozenset(
    {
        "accelerate",
        "acl",
        "analytics",
        "attributes",
        "cors",
        "encryption",
        "intelligent-tiering",
        "inventory",
        "legal-hold",
        "lifecycle",
        "logging",
        "metadata-configuration",
        "metrics",
        "notification",
        "object-lock",
        "ownershipControls",
        "policy",
        "policyStatus",
        "publicAccessBlock",
        "replication",
        "requestPayment",
        "restore",
        "retention",
        "select",
        "session",
        "tagging",
        "torrent",
        "versioning",
        "versions",
        "website",
    }
)
#: Sub-resources that only exist to write (multipart uploads, multi-object delete).
WRITE_SUBRESOURCES = frozenset({"uploads", "uploadId", "delete", "renameObject"})

_READ_METHODS = frozenset({"GET", "HEAD"})
_WRITE_METHODS = frozenset({"PUT", "POST", "DELETE", "PATCH"})


class Operation(StrEnum):
    """The read operations the gateway serves."""

    LIST_BUCKETS = "ListBuckets"
    HEAD_BUCKET = "HeadBucket"
    GET_BUCKET_LOCATION = "GetBucketLocation"
    LIST_OBJECTS_V2 = "ListObjectsV2"
    LIST_OBJECTS = "ListObjects"
    GET_OBJECT = "GetObject"
    HEAD_OBJECT = "HeadObject"


@dataclass(frozen=True, slots=True)
class Target:
    """What a request addresses: no bucket (the service), a bucket, or an object key."""

    bucket: str | None
    key: str | None
    virtual_host: bool = False

    @property
    def resource(self) -> str:
        """The ``Resource`` element of an error: ``/bucket/key`` as S3 writes it."""
        if self.bucket is None:
            return "/"
        return f"/{self.bucket}" if self.key is None else f"/{self.bucket}/{self.key}"


def host_bases(configured: Iterable[str | None]) -> frozenset[str]:
    """The host names that virtual-host addressing hangs buckets under.

    ``localhost`` always; each configured or bound host that is a DNS name
    (IP literals cannot carry a bucket label). Lower-cased.
    """
    bases = {"localhost"}
    for host in configured:
        if host and not _is_ip(host):
            bases.add(host.lower().rstrip("."))
    return frozenset(bases)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _host_name(host_header: str | None) -> str:
    """The host without the port, lower-cased; ``[::1]:9000`` gives ``[::1]``."""
    host = (host_header or "").strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _virtual_bucket(host: str, bases: frozenset[str]) -> str | None:
    if not host or host.startswith("[") or _is_ip(host):
        return None
    host = host.rstrip(".")
    if host in bases or host.startswith("s3."):
        return None
    marker = host.find(".s3.")
    if marker > 0:
        return host[:marker]
    for base in sorted(bases, key=len, reverse=True):
        if host.endswith("." + base):
            return host[: -len(base) - 1]
    return None


def _decode_path(raw_path: bytes) -> str:
    """Percent-decode the path once (``+`` stays ``+``, as S3 reads paths).

    Raises:
        S3Error: ``InvalidURI`` for bytes that are not UTF-8 or a NUL.
    """
    try:
        text = unquote(raw_path.decode("ascii"), encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise S3Error("InvalidURI", "Couldn't parse the specified URI.", status=400) from exc
    if "\x00" in text:
        raise S3Error("InvalidURI", "Couldn't parse the specified URI.", status=400)
    return text


def resolve_target(host_header: str | None, raw_path: bytes, bases: frozenset[str]) -> Target:
    """The bucket and key a request addresses, by virtual-host or path style.

    An empty key (``/bucket/`` or ``/`` under a virtual host) means the bucket.

    Raises:
        S3Error: ``InvalidURI`` when the path does not decode.
    """
    path = _decode_path(raw_path or b"/")
    if not path.startswith("/"):
        path = "/" + path
    bucket = _virtual_bucket(_host_name(host_header), bases)
    if bucket is not None:
        key = path[1:]
        return Target(bucket, key or None, virtual_host=True)
    rest = path[1:]
    if not rest:
        return Target(None, None)
    name, _, key = rest.partition("/")
    return Target(name, key or None)


def classify(method: str, target: Target, params: Mapping[str, str]) -> Operation:  # noqa: C901 - one flat decision table
    """The read operation a request names.

    Raises:
        S3Error: ``AccessDenied`` for any write, ``NotImplemented`` for a
            sub-resource this gateway does not model, ``MethodNotAllowed``
            for methods S3 does not know.
    """
    method = method.upper()
    unsupported = sorted(NOT_IMPLEMENTED_SUBRESOURCES.intersection(params))
    if method in _READ_METHODS:
        # ListMultipartUploads, ListParts: reads about writes that never happen here.
        unsupported += sorted(WRITE_SUBRESOURCES.intersection(params))
    if unsupported:
        raise S3Error(
            "NotImplemented",
            f"this read-only gateway does not implement ?{unsupported[0]}",
            resource=target.resource,
        )
    if method in _WRITE_METHODS:
        raise S3Error(
            "AccessDenied",
            "Access Denied: this S3 gateway is read-only; publish through the REST API",
            resource=target.resource,
        )
    if method not in _READ_METHODS:
        raise S3Error("MethodNotAllowed", resource=target.resource)
    head = method == "HEAD"
    if target.bucket is None:
        if head:
            raise S3Error("MethodNotAllowed", resource="/")
        return Operation.LIST_BUCKETS
    if target.key is None:
        if head:
            return Operation.HEAD_BUCKET
        if "location" in params:
            return Operation.GET_BUCKET_LOCATION
        if params.get("list-type") == "2":
            return Operation.LIST_OBJECTS_V2
        if "list-type" in params:
            raise S3Error("InvalidArgument", "list-type must be 2", resource=target.resource)
        return Operation.LIST_OBJECTS
    return Operation.HEAD_OBJECT if head else Operation.GET_OBJECT
