"""The same-host handoff's operations: parse one request, run it, build its answer.

The listener (``api.handoff``) accepts the connection, checks the peer's uid
and receives one message with its descriptors; this module decides what the
message asks for (docs/design/0002, docs/API.md "Same-host handoff"):

- ``append`` (the default when ``op`` is absent): ``{"upload", "offset",
  "length"}`` and one descriptor; appends ``file[offset:offset + length]``
  to an upload session with ``Uploads.append``, exactly as a PATCH body.
  Answer ``{"offset": n}``.
- ``store``: ``{"op": "store", "server", "length", "producer", "retention_class"}`` and
  one descriptor of a whole regular file of ``length`` bytes; the server
  hashes every byte and stores the blob as a finalized session would
  (``registry.handed.store_handed``). Answer ``{"blob": {"sha256", "blake3",
  "size"}, "created": bool}``.
- ``open``: ``{"op": "open", "server", "sha256": "<64 hex>"}`` and no descriptor; the
  answer ``{"size", "sha256", "blake3"}`` carries a read-only descriptor of a
  local copy (``registry.handed.open_local``).

``server`` is the id ``GET /v1/uploads/handoff`` gave with the socket's
path; ``store`` and ``open`` must carry it (``append`` may): a request for
another server is refused (404, ``detail.reason = "another_server"``).

Events recorded by ``store`` name the actor ``handoff:uid=<uid>``: no token
crosses the socket, the peer's uid (``SO_PEERCRED``) is what is known of it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from artifactstore import errors as e
from artifactstore.api.schemas import LABEL_PATTERN
from artifactstore.digests import Digest
from artifactstore.registry.handed import open_local, store_handed
from artifactstore.storage.streams import read_file_range

if TYPE_CHECKING:
    from artifactstore.api.metrics import Metrics
    from artifactstore.registry import Uploads

__all__ = ["READ_PIECE_BYTES", "Answer", "Request", "actor_for", "run"]

READ_PIECE_BYTES = 4 * 1024 * 1024
_MAX_INT = 2**63
_LABEL_RE = re.compile(LABEL_PATTERN)
_SHAPE = (
    "a handoff request is JSON with upload, offset and length (append), "
    'or {"op": "store", "length", "producer", "retention_class"}, or {"op": "open", "sha256"}'
)


@dataclass(slots=True)
class Request:
    """What the access log says about one handoff."""

    path: str = "/v1/uploads"
    route: str = "/v1/uploads/{upload_id}"
    received: int = 0


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer's JSON and the descriptor to send with it (``open`` only; closed after)."""

    body: dict[str, Any]
    fd: int | None = None


def actor_for(uid: int) -> str:
    """The actor of events a handoff records: the peer's uid is all that is known of it."""
    return f"handoff:uid={uid}"


async def run(
    message: bytes,
    fds: list[int],
    *,
    uid: int,
    server_id: str,
    uploads: Uploads,
    metrics: Metrics,
    request: Request,
) -> Answer:
    """Run one request; ``fds`` are the received descriptors (the caller closes them).

    Raises:
        ArtifactStoreError: the error to answer with.
    """
    try:
        fields = json.loads(message)
    except (ValueError, RecursionError):
        raise e.InvalidInputError(_SHAPE) from None
    if not isinstance(fields, dict):
        raise e.InvalidInputError(_SHAPE)
    op = fields.get("op", "append")
    if op == "open":
        if fds:
            raise e.InvalidInputError("an open request carries no file descriptor")
        return await _open(fields, server_id, uploads, request)
    if op not in {"append", "store"}:
        raise e.InvalidInputError(f"unknown handoff op {str(op)[:40]!r}; {_SHAPE}")
    if len(fds) != 1:
        raise e.InvalidInputError("a handoff carries exactly one file descriptor")
    _check_readable_file(fds[0])
    if op == "store":
        return await _store(fields, fds[0], uid, server_id, uploads, request)
    if fields.get("server") not in {None, server_id}:
        _another_server()
    return await _append(fields, fds[0], uploads, metrics, request)


def _check_readable_file(fd: int) -> None:
    """A regular file open for reading; else reading it would fail mid-operation (EBADF)."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise e.InvalidInputError("only regular files can be handed over")
    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
        raise e.InvalidInputError("the handed descriptor is open for writing only; open it to read")


def _another_server() -> None:
    """The client asked another server for this socket's path (two servers, one data dir)."""
    raise e.NotFoundError("this handoff socket belongs to another server", reason="another_server")


async def _append(
    fields: dict[str, Any], fd: int, uploads: Uploads, metrics: Metrics, request: Request
) -> Answer:
    session_id, offset, length = _parse_append(fields)
    request.path = f"/v1/uploads/{session_id}"
    with os.fdopen(fd, "rb", buffering=0, closefd=False) as source:
        new_offset = await uploads.append(
            session_id,
            offset,
            read_file_range(source, offset, offset + length, READ_PIECE_BYTES),
            content_length=length,
        )
    request.received = new_offset - offset
    metrics.appended_at(offset)
    return Answer({"offset": new_offset})


async def _store(  # noqa: PLR0917 - the parsed request and where it runs
    fields: dict[str, Any], fd: int, uid: int, server_id: str, uploads: Uploads, request: Request
) -> Answer:
    request.path = request.route = "/v1/blobs"
    length = _int(fields, "length")
    labels = {name: _label(fields, name) for name in ("producer", "retention_class")}
    if fields.get("server") != server_id:  # an append may omit it: an unknown session is a 404
        _another_server()
    blob, created = await store_handed(
        uploads.registry,
        fd,
        length,
        producer=labels["producer"],
        retention_class=labels["retention_class"],
        actor=actor_for(uid),
    )
    request.received = length
    digests = {"sha256": str(blob.sha256), "blake3": str(blob.blake3), "size": blob.size}
    return Answer({"blob": digests, "created": created})


async def _open(
    fields: dict[str, Any], server_id: str, uploads: Uploads, request: Request
) -> Answer:
    request.route = "/v1/blobs/{sha256}"
    text = fields.get("sha256")
    if not isinstance(text, str):
        raise e.InvalidInputError("an open request names sha256 as 64 lowercase hex characters")
    sha256 = Digest.from_hex("sha256", text)
    if fields.get("server") != server_id:
        _another_server()
    request.path = f"/v1/blobs/{sha256}"
    fd, blob = await open_local(uploads.registry, sha256)
    body = {"size": blob.size, "sha256": str(blob.sha256), "blake3": str(blob.blake3)}
    return Answer(body, fd)


def _int(fields: dict[str, Any], name: str) -> int:
    value = fields.get(name)
    if type(value) is not int or not 0 <= value < _MAX_INT:
        raise e.InvalidInputError(f"{name} is an integer in [0, 2**63)")
    return value


def _label(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not _LABEL_RE.fullmatch(value):
        raise e.InvalidInputError(f"{name} must match {LABEL_PATTERN}")
    return value


def _parse_append(fields: dict[str, Any]) -> tuple[uuid.UUID, int, int]:
    """The append's (session, offset, length), each validated.

    Raises:
        InvalidInputError: fields missing or out of range.
    """
    try:
        session_id = uuid.UUID(str(fields["upload"]))
        offset, length = fields["offset"], fields["length"]
    except (ValueError, KeyError, TypeError):
        raise e.InvalidInputError(_SHAPE) from None
    for value in (offset, length):
        if type(value) is not int or not 0 <= value < _MAX_INT:
            raise e.InvalidInputError("offset and length are integers in [0, 2**63)")
    if offset + length >= _MAX_INT:
        raise e.InvalidInputError("the range ends beyond 2**63")
    return session_id, offset, length
