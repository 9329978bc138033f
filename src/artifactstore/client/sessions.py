"""Resumable upload sessions (DESIGN section 5): an object that owns its offset.

``UploadSession.open`` asks the server for a session (or learns the blob is
already held), ``send`` feeds it a local file from the session's offset in
chunks through a ``BodySender``, ``finish`` closes it with the blake3 and
returns the stored blob. The offset only ever moves to what the server
acknowledged: after a failure the session asks ``HEAD`` for the server's
offset and resumes there, and an ``offset_mismatch`` answer carries the
server's offset too.

Bodies go through one interface, ``BodySender``: ``HttpSender`` PATCHes
(``sendfile(2)`` where no proxy is in the way) and ``HandoffSender`` hands
the open file to a server on this machine (``client/handoff.py``), falling
back to HTTP for good when the socket cannot be used.

Which session a program that is run again resumes is ``client/session_cache.py``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from artifactstore import errors
from artifactstore.client.handoff import HandoffClient, HandoffUnavailableError
from artifactstore.models import BlobInfo, UploadSessionInfo
from artifactstore.protocol import OFFSET_HEADER

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from artifactstore.client.transport import Transport
    from artifactstore.digests import Digest

__all__ = ["BodySender", "HandoffSender", "HttpSender", "UploadSession"]

log = logging.getLogger("artifactstore.client")


class BodySender(Protocol):
    """Appends a byte range of a local file to an upload session; returns the new offset."""

    async def append(
        self, session: str, file: Path, start: int, length: int, on_progress: Callable[[int], None]
    ) -> int:
        """Append ``file[start:start + length]`` at ``start``; the server's new offset."""
        ...


class HttpSender:
    """``PATCH`` with the range as the body."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    async def append(
        self, session: str, file: Path, start: int, length: int, on_progress: Callable[[int], None]
    ) -> int:
        """PATCH the range; bytes not acknowledged are taken back from the progress."""
        sent = 0

        def progressed(n: int) -> None:
            nonlocal sent
            sent += n
            on_progress(n)

        try:
            response = await self.transport.send_file(
                "PATCH",
                f"/v1/uploads/{session}",
                file,
                start,
                length,
                headers={
                    OFFSET_HEADER: str(start),
                    "Content-Type": "application/offset+octet-stream",
                },
                on_progress=progressed,
            )
        except BaseException:
            on_progress(-sent)
            raise
        return int(response.headers.get(OFFSET_HEADER.lower(), start + length))


class HandoffSender:
    """Hands the open file to the server on this machine; HTTP once the socket fails."""

    def __init__(self, handoff: HandoffClient, fallback: BodySender) -> None:
        self.handoff: HandoffClient | None = handoff
        self.fallback = fallback

    def give_up(self, reason: str) -> None:
        """Send every later range over HTTP."""
        if self.handoff is not None:
            log.debug("same-host handoff off: %s; sending bytes over HTTP", reason)
        self.handoff = None

    async def append(
        self, session: str, file: Path, start: int, length: int, on_progress: Callable[[int], None]
    ) -> int:
        """Hand the range over; over HTTP when the socket cannot be used."""
        if self.handoff is not None:
            try:
                after = await self.handoff.append(session, file, start, length)
            except HandoffUnavailableError as exc:
                self.give_up(str(exc))
            except errors.UploadNotFoundError:
                # The socket's server does not know the session: another server's socket.
                self.give_up("the socket's server does not know the session")
            else:
                on_progress(after - start)
                return after
        return await self.fallback.append(session, file, start, length, on_progress)


def _busy(exc: BaseException) -> bool:
    """409 ``conflict``: an earlier append or a finalize of the session is still running."""
    return type(exc) is errors.ConflictError


class UploadSession:
    """One upload session on the server and the offset it acknowledged."""

    def __init__(self, transport: Transport, session_id: str, offset: int) -> None:
        self.transport = transport
        self.id = session_id
        self._offset = offset

    @property
    def offset(self) -> int:
        """Bytes the server holds durably (the resume point)."""
        return self._offset

    @classmethod
    async def open(
        cls, transport: Transport, size: int, blake3: Digest, labels: dict[str, str], what: str
    ) -> UploadSession | BlobInfo:
        """A new session for the blob, or the blob itself when the server already holds it."""
        body = {"size": size, "blake3": str(blake3), **labels}

        async def post(_attempt: int) -> UploadSession | BlobInfo:
            response = await transport.request("POST", "/v1/uploads", json=body)
            data = response.json()
            if response.status_code == 200 and data.get("status") == "exists":  # noqa: PLR2004
                return BlobInfo.from_json(data)
            info = UploadSessionInfo.from_json(data)
            return cls(transport, info.id, info.offset)

        return await transport.retrying(f"{what}: open session", post)

    @classmethod
    async def resume(cls, transport: Transport, session_id: str, what: str) -> UploadSession:
        """The session as the server has it now.

        Raises:
            UploadNotFoundError: it expired, was aborted or finished.
        """
        session = cls(transport, session_id, 0)
        await transport.retrying(f"{what}: resume", lambda _attempt: session.sync())
        return session

    async def sync(self) -> int:
        """Take the server's offset (``HEAD``); returns it."""
        try:
            response = await self.transport.request("HEAD", f"/v1/uploads/{self.id}")
        except errors.NotFoundError as exc:
            # A HEAD answer has no body to name the code: a 404 here is the session.
            raise errors.UploadNotFoundError(
                f"upload session {self.id} is gone (expired, aborted or finished)", **exc.detail
            ) from exc
        self._offset = int(response.headers.get(OFFSET_HEADER, "0"))
        return self._offset

    async def send(
        self,
        file: Path,
        size: int,
        sender: BodySender,
        *,
        chunk_size: int,
        on_progress: Callable[[int], None],
        check: Callable[[], None],
        what: str,
    ) -> None:
        """Send ``file`` from the offset to ``size`` in chunks, resuming after failures.

        ``check`` runs before each chunk (it refuses a file that changed).
        """

        async def chunk(attempt: int) -> int:
            if attempt:
                before = self._offset
                on_progress(await self.sync() - before)
            length = min(chunk_size, size - self._offset)
            if length <= 0:
                return self._offset
            check()
            return await sender.append(self.id, file, self._offset, length, on_progress)

        while self._offset < size:
            try:
                after = await self.transport.retrying(
                    f"{what}: send bytes", chunk, also_retry=_busy
                )
            except errors.UploadOffsetMismatchError as exc:
                current = exc.detail.get("offset")
                if not isinstance(current, int):
                    raise
                on_progress(current - self._offset)
                after = current
            self._offset = after

    async def finish(self, blake3: Digest, what: str) -> BlobInfo:
        """Close the session: the server checks the blake3 and stores the blob."""

        async def put(_attempt: int) -> BlobInfo:
            params = {"blake3": blake3.hex}
            response = await self.transport.request("PUT", f"/v1/uploads/{self.id}", params=params)
            return BlobInfo.from_json(response.json())

        # 409: another PUT of this session (another process sharing the session
        # cache) is finalizing it; once it is done this one gets 404 and the
        # caller opens a new session, which the server answers with ``exists``.
        return await self.transport.retrying(f"{what}: finish upload", put, also_retry=_busy)
