"""Hand files to a server on this machine instead of sending their bytes (``api.handoff``).

The server names its socket in the ``Upload-Handoff`` header of session
answers, to peers on loopback only (a client that knows the data dir may
also use ``<data_dir>/handoff.sock`` directly). Three calls, one connection
each (docs/API.md "Same-host handoff"):

- ``append``: the server reads ``file[offset:offset + length]`` and appends
  it to an upload session, as if it were a PATCH body.
- ``store``: the server reads the whole file, hashes every byte (the client
  computes no digest) and stores the blob; a blob already held is not
  stored again (``created`` False).
- ``open_blob``: the server passes back a read-only descriptor of a local
  copy; the caller reads it and must verify both digests itself.

Anything that makes the socket unusable (another machine, another user, a
server without it) raises ``HandoffUnavailableError`` and the caller goes on
over HTTP; so does ``NotLocalError`` from ``open_blob``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from typing import TYPE_CHECKING, Any

from artifactstore import errors
from artifactstore.client.errors import ServerUnreachableError
from artifactstore.config import is_loopback
from artifactstore.protocol import error_from_body

if TYPE_CHECKING:
    from pathlib import Path

    from artifactstore.client.transport import Transport

__all__ = ["HandoffClient", "HandoffUnavailableError", "handoff_for"]

log = logging.getLogger("artifactstore.client")

CONNECT_TIMEOUT_SECONDS = 5.0
ANSWER_TIMEOUT_SECONDS = 60.0
SLOWEST_DISK_BYTES_PER_SECOND = 10 * 1024 * 1024
"""The answer comes once the range is staged and durable: allow for a slow disk."""
MAX_ANSWER_BYTES = 64 * 1024


class HandoffUnavailableError(Exception):
    """The socket cannot be used from here; send the bytes over HTTP instead."""


class HandoffClient:
    """Appends, stores and opens files through one server's handoff socket."""

    def __init__(self, path: str, server_id: str | None = None) -> None:
        self.path = path
        self.server_id = server_id
        """The id the server gave with the path; ``store`` and ``open`` need it."""

    async def append(self, session: str, file: Path, offset: int, length: int) -> int:
        """Have the server append ``file[offset:offset + length]`` at ``offset``; the new offset.

        Raises:
            HandoffUnavailableError: the socket cannot be reached (use HTTP).
            ServerUnreachableError: the server went away before answering (retry).
            ArtifactStoreError: the server's answer, as for a PATCH.
        """
        request: dict[str, Any] = {"upload": session, "offset": offset, "length": length}
        if self.server_id is not None:
            request["server"] = self.server_id
        body = await asyncio.to_thread(self._with_file, file, request, _answer_timeout(length))
        try:
            return int(body["offset"])
        except (KeyError, TypeError, ValueError) as exc:
            raise _invalid() from exc

    async def store(
        self,
        file: Path,
        size: int,
        *,
        producer: str | None = None,
        retention_class: str | None = None,
    ) -> dict[str, Any]:
        """Have the server store the whole ``file`` (``size`` bytes) as a blob; its answer.

        The answer is ``{"blob": {"sha256": "sha256:<hex>", "blake3":
        "blake3:<hex>", "size": n}, "created": bool}``; ``created`` is False
        when the server already held the blob (nothing new was recorded).
        Routing follows ``producer`` and ``retention_class`` as for a session.

        Raises:
            HandoffUnavailableError: the socket cannot be reached (use HTTP).
            ServerUnreachableError: the server went away before answering (retry).
            SizeMismatchError: the file is not ``size`` bytes long (or shrank while read).
            ArtifactStoreError: any other refusal (``TooLargeError``, ...).
        """
        request = {
            "op": "store",
            "server": self.server_id,
            "length": size,
            "producer": producer,
            "retention_class": retention_class,
        }
        body = await asyncio.to_thread(self._with_file, file, request, _answer_timeout(size))
        blob = body.get("blob")
        if not isinstance(blob, dict) or not isinstance(body.get("created"), bool):
            raise _invalid()
        return body

    async def open_blob(self, sha256_hex: str) -> tuple[int, dict[str, Any]]:
        """A read-only descriptor of the blob's local copy and ``{"size", "sha256", "blake3"}``.

        The caller owns the descriptor (close it) and must check both digests
        of what it reads: the server does not re-hash the copy.

        Raises:
            HandoffUnavailableError: the socket cannot be reached (use HTTP).
            ServerUnreachableError: the server went away before answering (retry).
            BlobNotFoundError: the server holds no readable copy.
            NotLocalError: no copy is a file on this machine (use HTTP).
            InvalidDigestError: ``sha256_hex`` is not 64 lowercase hex characters.
        """
        request = {"op": "open", "server": self.server_id, "sha256": sha256_hex}
        body, fds = await asyncio.to_thread(self._call, request, None, ANSWER_TIMEOUT_SECONDS)
        if len(fds) != 1 or not {"size", "sha256", "blake3"} <= body.keys():
            for fd in fds:
                os.close(fd)
            raise _invalid()
        return fds[0], body

    def _with_file(self, file: Path, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        with file.open("rb") as source:
            body, fds = self._call(request, source.fileno(), timeout)
        for fd in fds:  # none expected
            os.close(fd)
        return body

    def _call(
        self, request: dict[str, Any], fd: int | None, timeout: float
    ) -> tuple[dict[str, Any], list[int]]:
        """Send one request (with ``fd``); the answer's body and descriptors, or its error."""
        message = json.dumps(request).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.settimeout(CONNECT_TIMEOUT_SECONDS)
            try:
                sock.connect(self.path)
            except OSError as exc:
                raise HandoffUnavailableError(f"{self.path}: {exc.strerror or exc}") from exc
            sock.settimeout(timeout)
            try:
                if fd is None:
                    sock.send(message)
                else:
                    socket.send_fds(sock, [message], [fd])
                answer, fds, _, _ = socket.recv_fds(
                    sock, MAX_ANSWER_BYTES, 1, socket.MSG_CMSG_CLOEXEC
                )
            except OSError as exc:
                raise ServerUnreachableError(f"handoff to {self.path} failed: {exc}") from exc
        return self._answer(answer, fds)

    def _answer(self, answer: bytes, fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        """The answer's body and descriptors, or the error it stands for."""
        if not answer:
            raise ServerUnreachableError("the server closed the handoff before answering")
        try:
            body = json.loads(answer)
            if not isinstance(body, dict):
                raise TypeError(body)
            if "error" not in body:
                return body, fds
            status = int(body["status"])
        except (ValueError, KeyError, TypeError) as exc:
            for received in fds:
                os.close(received)
            raise _invalid() from exc
        for received in fds:
            os.close(received)
        error = error_from_body(status, body, fallback=f"the handoff answered {status}")
        if error.detail.get("reason") == "another_server":
            raise HandoffUnavailableError(f"{self.path} belongs to another server") from error
        raise error


def _answer_timeout(length: int) -> float:
    return ANSWER_TIMEOUT_SECONDS + length / SLOWEST_DISK_BYTES_PER_SECOND


def _invalid() -> errors.ArtifactStoreError:
    return errors.ArtifactStoreError("the server sent an invalid handoff answer")


async def handoff_for(transport: Transport) -> HandoffClient | None:
    """The server's same-host socket, when it offers one to this client."""
    if not transport.direct or not is_loopback(transport.endpoint.host):
        return None
    try:
        answer = await transport.json("GET", "/v1/uploads/handoff")
    except errors.ArtifactStoreError as exc:
        log.debug("no same-host handoff: %s", exc.message)
        return None
    if not isinstance(answer, dict):
        return None
    path, server = answer.get("socket"), answer.get("server")
    if not isinstance(path, str) or not isinstance(server, str):
        return None
    return HandoffClient(path, server)
