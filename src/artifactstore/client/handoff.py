"""Hand a file to a server on this machine instead of sending its bytes (``api.handoff``).

The server names its socket in the ``Upload-Handoff`` header of session
answers, to peers on loopback only. The uploader then passes the open file
over that socket for each chunk; the server reads and appends it as if it
were a PATCH body. Anything that makes the socket unusable (another machine,
another user, a server without it) raises ``HandoffUnavailableError`` and the
uploader goes on over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import TYPE_CHECKING

from artifactstore import errors
from artifactstore.client.errors import ServerUnreachableError
from artifactstore.protocol import error_from_body

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["HandoffClient", "HandoffUnavailableError"]

CONNECT_TIMEOUT_SECONDS = 5.0
ANSWER_TIMEOUT_SECONDS = 60.0
SLOWEST_DISK_BYTES_PER_SECOND = 10 * 1024 * 1024
"""The answer comes once the range is staged and durable: allow for a slow disk."""
MAX_ANSWER_BYTES = 64 * 1024


class HandoffUnavailableError(Exception):
    """The socket cannot be used from here; send the bytes over HTTP instead."""


class HandoffClient:
    """Appends file ranges to upload sessions through one server's handoff socket."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def append(self, session: str, file: Path, offset: int, length: int) -> int:
        """Have the server append ``file[offset:offset + length]`` at ``offset``; the new offset.

        Raises:
            HandoffUnavailableError: the socket cannot be reached (use HTTP).
            ServerUnreachableError: the server went away before answering (retry).
            ArtifactStoreError: the server's answer, as for a PATCH.
        """
        return await asyncio.to_thread(self._append, session, file, offset, length)

    def _append(self, session: str, file: Path, offset: int, length: int) -> int:
        request = json.dumps({"upload": session, "offset": offset, "length": length}).encode()
        with (
            file.open("rb") as source,
            socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock,
        ):
            sock.settimeout(CONNECT_TIMEOUT_SECONDS)
            try:
                sock.connect(self.path)
            except OSError as exc:
                raise HandoffUnavailableError(f"{self.path}: {exc.strerror or exc}") from exc
            sock.settimeout(ANSWER_TIMEOUT_SECONDS + length / SLOWEST_DISK_BYTES_PER_SECOND)
            try:
                socket.send_fds(sock, [request], [source.fileno()])
                answer = sock.recv(MAX_ANSWER_BYTES)
            except OSError as exc:
                raise ServerUnreachableError(f"handoff to {self.path} failed: {exc}") from exc
        if not answer:
            raise ServerUnreachableError("the server closed the handoff before answering")
        try:
            body = json.loads(answer)
            if "error" not in body:
                return int(body["offset"])
            status = int(body["status"])
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.ArtifactStoreError("the server sent an invalid handoff answer") from exc
        raise error_from_body(status, body, fallback=f"the handoff answered {status}")

    async def store(  # interim until the server side lands (wip-server)
        self, file: Path, size: int, *, producer: str | None, retention_class: str | None
    ) -> dict[str, object]:
        """Interim."""
        raise HandoffUnavailableError("store not supported")

    async def open_blob(self, sha256_hex: str) -> tuple[int, dict[str, object]]:
        """Interim."""
        raise HandoffUnavailableError("open not supported")
