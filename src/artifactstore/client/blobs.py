"""Make the server hold every blob of an upload, sending only what it lacks.

- ``learn_held``: one ``POST /v1/blobs/exists`` per 1,000 hashed blobs; each
  one held (on the backends these routing labels reach) is not sent.
- A file of at most ``SMALL_FILE_BYTES`` goes as the body of one ``POST
  /v1/blobs?blake3=<hex>``: one request instead of three, so a tree of small
  files is bound by the server's per-blob work, not by round trips. A server
  without the route (404/405) turns this off for the run; a 413 lowers the
  size sent this way.
- A larger hashed file goes through an ``UploadSession`` (resumable, its id
  kept in the ``SessionCache``, which a re-run through any URL of the same
  deployment resumes); a session that vanished is replaced by a new one
  (with a one-line notice), whose ``POST`` finds the blob if it was stored
  after all. A session given up on (the server unreachable after the retry
  budget) stays remembered and the error says how to resume it.
- A file not hashed at all (the same-host path: the bytes never cross a
  network) is handed to the server whole with the handoff's ``store``: the
  server hashes what it reads and answers with both digests; a blob it
  already held is dropped after the hash.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from artifactstore import errors
from artifactstore.client.files import blake3_file, check_unchanged
from artifactstore.client.handoff import HandoffUnavailableError
from artifactstore.client.sessions import UploadSession
from artifactstore.models import BlobInfo

if TYPE_CHECKING:
    from collections.abc import Sequence

    from artifactstore.client.files import SourceFile
    from artifactstore.client.handoff import HandoffClient
    from artifactstore.client.progress import Meter
    from artifactstore.client.session_cache import SessionCache
    from artifactstore.client.sessions import BodySender
    from artifactstore.client.transport import Transport
    from artifactstore.digests import Digest

__all__ = ["EXISTS_BATCH", "SMALL_FILE_BYTES", "Blob", "BlobUploader", "first_error", "send_all"]

log = logging.getLogger("artifactstore.client")

# At or below this size a file goes in one request: the body is held in memory
# on both sides (--concurrency of them at once); above ~1 MiB the three requests
# of a session cost little next to moving the bytes, and sessions resume.
SMALL_FILE_BYTES = 1024 * 1024
EXISTS_BATCH = 1000  # the server's maximum per POST /v1/blobs/exists
MAX_SESSION_RESTARTS = 3
_ROUTE_MISSING = frozenset({404, 405})  # an older server: no such route or method


@dataclass(slots=True)
class Blob:
    """One distinct content to make sure the server holds, and the files that share it."""

    size: int
    files: list[SourceFile]
    blake3: Digest | None = None
    """None when the client did not hash it (the server will)."""
    info: BlobInfo | None = None
    """What the server says it holds, once known."""

    @property
    def source(self) -> SourceFile:
        """The file whose bytes are sent."""
        return self.files[0]

    def learn(self, info: BlobInfo) -> None:
        """Take the server's names after checking they are these bytes'."""
        if info.size != self.size or (self.blake3 is not None and info.blake3 != self.blake3):
            raise errors.IntegrityError(
                f"{self.source.path}: the server answered with another blob"
                f" ({info.blake3}, {info.size} bytes)"
            )
        self.info = info


@dataclass(slots=True)
class Totals:
    """What this run sent: distinct blobs stored by it and their bytes."""

    stored: set[str] = field(default_factory=set)
    bytes: int = 0


def _received_other_bytes(blob: Blob, exc: errors.DigestMismatchError) -> errors.IntegrityError:
    return errors.DigestMismatchError(
        f"{blob.source.source}: the server received different bytes ({exc.message});"
        " did the file change during the upload?",
        **exc.detail,
    )


def _route_missing(exc: errors.ArtifactStoreError) -> bool:
    return exc.detail.get("http_status") in _ROUTE_MISSING


class BlobUploader:
    """Sends the blobs of one upload; see the module docstring for which path each takes."""

    def __init__(
        self,
        transport: Transport,
        sender: BodySender,
        cache: SessionCache,
        meter: Meter,
        *,
        labels: dict[str, str],
        chunk_size: int,
        handoff: HandoffClient | None,
    ) -> None:
        self.transport = transport
        self.sender = sender
        self.cache = cache
        self.meter = meter
        self.labels = labels
        self.chunk_size = chunk_size
        self.handoff = handoff
        self.small_bytes = SMALL_FILE_BYTES
        self.totals = Totals()

    async def learn_held(self, blobs: Sequence[Blob]) -> None:
        """Give every hashed blob the server already holds its ``info``, 1,000 per request."""
        todo = [b for b in blobs if b.blake3 is not None]
        for start in range(0, len(todo), EXISTS_BATCH):
            batch = todo[start : start + EXISTS_BATCH]
            body = {"blobs": [{"blake3": str(b.blake3)} for b in batch], **self.labels}

            async def post(_attempt: int, body: dict[str, Any] = body) -> list[Any]:
                answer = (await self.transport.json("POST", "/v1/blobs/exists", json=body))["blobs"]
                if not isinstance(answer, list) or len(answer) != len(body["blobs"]):
                    raise errors.IntegrityError("the server's exists answer has another length")
                return answer

            try:
                answer = await self.transport.retrying("ask which blobs are held", post)
            except errors.ArtifactStoreError as exc:
                if not _route_missing(exc):
                    raise
                self.small_bytes = -1  # an older server: sessions find held blobs
                return
            for blob, found in zip(batch, answer, strict=True):
                if isinstance(found, dict):
                    blob.learn(BlobInfo.from_json(found))

    async def send(self, blob: Blob) -> None:
        """Make the server hold ``blob`` (its ``info`` is set afterwards)."""
        if blob.blake3 is None:
            await self._store_whole(blob)
        elif not await self._send_small(blob):
            await self._send_session(blob)

    def _stored(self, blob: Blob, info: BlobInfo, *, sent: int | None) -> None:
        """Note a blob the server holds; ``sent``: bytes this run sent, None if it held it."""
        blob.learn(info)
        if sent is not None:
            self.totals.stored.add(info.blake3.hex)
            self.totals.bytes += sent

    async def _store_whole(self, blob: Blob) -> None:
        """The handoff's ``store``: the server reads and hashes the whole file."""
        item = blob.source
        try:
            if self.handoff is None:
                raise HandoffUnavailableError("the socket failed earlier")
            channel = self.handoff
            answer = await self.transport.retrying(
                f"{item.path}: hand over",
                lambda _attempt: channel.store(
                    item.source,
                    blob.size,
                    producer=self.labels.get("producer"),
                    retention_class=self.labels.get("retention_class"),
                ),
            )
        except HandoffUnavailableError as exc:
            log.debug("same-host handoff off: %s; hashing %s here", exc, item.path)
            self.handoff = None
            blob.blake3 = await asyncio.to_thread(blake3_file, item, lambda _n: None)
            await self._send_session(blob)
            return
        check_unchanged(item)  # what the server read is what was listed
        sent = blob.size if answer["created"] else None
        self._stored(blob, BlobInfo.from_json(answer["blob"]), sent=sent)
        self.meter.advance(blob.size)

    async def _send_small(self, blob: Blob) -> bool:
        """One ``POST /v1/blobs``; False when the blob must go through a session."""
        if blob.size > self.small_bytes or blob.blake3 is None:
            return False
        params = {"blake3": blob.blake3.hex, **self.labels}

        async def post(_attempt: int) -> tuple[BlobInfo, bool]:
            check_unchanged(blob.source)
            response = await self.transport.send_file(
                "POST",
                "/v1/blobs",
                blob.source.source,
                0,
                blob.size,
                headers={"Content-Type": "application/octet-stream"},
                params=params,
                on_progress=lambda _n: None,  # moves once the server answered
            )
            return BlobInfo.from_json(response.json()), response.status == 201  # noqa: PLR2004

        try:
            info, created = await self.transport.retrying(f"{blob.source.path}: upload", post)
        except errors.TooLargeError:
            self.small_bytes = min(self.small_bytes, blob.size - 1)
            return False
        except errors.DigestMismatchError as exc:
            raise _received_other_bytes(blob, exc) from exc
        except errors.ArtifactStoreError as exc:
            if not _route_missing(exc):
                raise
            self.small_bytes = -1
            return False
        self._stored(blob, info, sent=blob.size if created else None)
        self.meter.advance(blob.size)
        return True

    async def _send_session(self, blob: Blob) -> None:
        """Through a session, resumed from the cache when one was left; restarted if it vanished."""
        for restart in range(MAX_SESSION_RESTARTS + 1):
            try:
                await self._session_once(blob)
            except errors.UploadNotFoundError:
                if restart == MAX_SESSION_RESTARTS:
                    raise
                continue
            return

    async def _resume_remembered(self, blob: Blob) -> UploadSession | None:
        """The first remembered session of this blob the server still has (see session_cache)."""
        assert blob.blake3 is not None
        key, server, item = blob.blake3.hex, self.transport.endpoint.url, blob.source
        deployment = self.transport.deployment
        for saved in self.cache.candidates(server, deployment, key, blob.size):
            try:
                session = await UploadSession.resume(self.transport, saved.session, item.path)
            except errors.UploadNotFoundError:
                if saved.same_place(server, deployment):
                    log.warning(
                        "%s: upload session %s is gone (expired, aborted or finished);"
                        " starting a new one",
                        item.path,
                        saved.session,
                    )
                    self.cache.forget(key, saved.session)
                continue
            if not saved.same_place(server, deployment):
                log.debug(
                    "%s: resuming session %s (opened via %s)",
                    item.path,
                    saved.session,
                    saved.server,
                )
            self.cache.save(server, deployment, key, blob.size, session.id)
            return session
        return None

    async def _session_once(self, blob: Blob) -> None:
        assert blob.blake3 is not None
        item, key = blob.source, blob.blake3.hex
        session = await self._resume_remembered(blob)
        if session is None:
            opened = await UploadSession.open(
                self.transport, blob.size, blob.blake3, self.labels, item.path
            )
            if isinstance(opened, BlobInfo):
                self._stored(blob, opened, sent=None)
                self.meter.advance(blob.size)
                return
            session = opened
            self.cache.save(
                self.transport.endpoint.url, self.transport.deployment, key, blob.size, session.id
            )
        self.meter.advance(session.offset)
        before = session.offset
        try:
            await session.send(
                item.source,
                blob.size,
                self.sender,
                chunk_size=self.chunk_size,
                on_progress=self.meter.advance,
                check=lambda: check_unchanged(item),
                what=item.path,
            )
            info = await session.finish(blob.blake3, item.path)
        except errors.DigestMismatchError as exc:
            self.cache.forget(key, session.id)
            raise _received_other_bytes(blob, exc) from exc
        except errors.UploadNotFoundError:
            log.warning(
                "%s: upload session %s is gone (expired, aborted or finished); starting a new one",
                item.path,
                session.id,
            )
            self.cache.forget(key, session.id)
            raise
        except errors.UnavailableError as exc:
            raise _resumable(exc, blob, session) from exc
        self.cache.forget(key, session.id)
        self._stored(blob, info, sent=blob.size - before)


def _resumable(exc: errors.UnavailableError, blob: Blob, session: UploadSession) -> Exception:
    """The failure that ended a session's upload, saying how to pick it up again."""
    message = (
        f"{exc.message}; {blob.source.path}: {session.offset} of {blob.size} bytes are in"
        f" upload session {session.id}: run the same command again (through any URL of"
        " this deployment) to resume"
    )
    return type(exc)(message, **{**exc.detail, "upload": session.id, "offset": session.offset})


async def send_all(uploader: BlobUploader, blobs: Sequence[Blob], concurrency: int) -> None:
    """Send every blob not yet held, ``concurrency`` at once; the first failure cancels the rest."""
    gate = asyncio.Semaphore(concurrency)

    async def one(blob: Blob) -> None:
        async with gate:
            await uploader.send(blob)

    try:
        async with asyncio.TaskGroup() as group:
            for blob in blobs:
                if blob.info is None:
                    group.create_task(one(blob))
    except BaseExceptionGroup as failed:
        raise first_error(failed) from None


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real failure in a task group's exceptions (cancellations come last)."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for exc in leaves:
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return leaves[0] if leaves else group
