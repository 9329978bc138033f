"""Crash-safe finalize of upload sessions: claim the bytes, write the intent, then store.

A finalize whose digests checked out *claims* the session (docs/design/0006):
``upload-<id>`` is renamed ``finalizing-<id>`` and ``finalizing-<id>.intent``
records the digests, size, target backends and actor (fsynced) before any
backend write. From then on the session's outcome is fixed - that blob is
stored - and whoever finds the intent with nobody holding it completes it:

* a retried PUT (``Claims.complete``): stores from ``finalizing-<id>`` when
  it is still there, else adopts the copies the backends hold (keys are
  content-addressed: the same digest is the same key), records them, and
  the session ends as if the first PUT had answered;
* the expiry sweep once the session's row is gone (``Claims.settle``):
  records the copies already written and removes the claimed bytes.

Copies are recorded, never deleted: another writer of the same blob may be
about to record the same object (``journal.fresh_copies``). The intent file
is also the lock: a finalize holds ``flock`` on it while it runs, and the
lock ends with its process, so an intent nobody holds is a crashed or failed
finalize's. A claim without an intent (a crash between the rename and the
intent) gives the bytes back to the session.

Not here: session rows, appends and hashing (``registry.uploads``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from artifactstore.digests import BlobDigests, Digest
from artifactstore.errors import ConflictError, InvalidInputError, UploadNotFoundError
from artifactstore.events import BlobStored
from artifactstore.registry.ingest import Expected, check_expected
from artifactstore.staged_file import fsync_dir
from artifactstore.testpoint import pause_at

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Iterator
    from pathlib import Path

    import sqlalchemy as sa

    from artifactstore.config import UploadSettings
    from artifactstore.digests import Algorithm
    from artifactstore.registry.records import BlobRecord
    from artifactstore.registry.service import Registry

__all__ = ["CLAIM_PREFIX", "Claim", "Claims", "Intent", "check_retry", "expected_of", "size_limit"]

CLAIM_PREFIX = "finalizing-"
INTENT_SUFFIX = ".intent"


@dataclass(frozen=True, slots=True)
class Intent:
    """What a claimed finalize will store: the checked digests, where, and for whom."""

    digests: BlobDigests
    targets: tuple[str, ...]
    actor: str

    def encode(self) -> bytes:
        """The intent file's JSON."""
        d = self.digests
        return json.dumps(
            {
                "sha256": d.sha256.hex,
                "blake3": d.blake3.hex,
                "size": d.size,
                "targets": list(self.targets),
                "actor": self.actor,
            }
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> Intent | None:
        """The intent in ``data``; None for an empty or torn file (written before any copy)."""
        try:
            raw = json.loads(data)
            digests = BlobDigests(
                Digest("sha256", bytes.fromhex(raw["sha256"])),
                Digest("blake3", bytes.fromhex(raw["blake3"])),
                int(raw["size"]),
            )
            return cls(digests, tuple(str(t) for t in raw["targets"]), str(raw["actor"]))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(slots=True)
class Claim:
    """A session's intent file, locked by this finalize; ``intent`` once written."""

    session_id: uuid.UUID
    path: Path
    fd: int
    intent: Intent | None
    done: bool = False

    def write(self, intent: Intent) -> None:
        """Make ``intent`` durable: after this the session's blob will be stored."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, intent.encode(), 0)
        os.fsync(self.fd)
        fsync_dir(self.path.parent)
        self.intent = intent


class Claims:
    """The claims in a registry's staging directory."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.root = registry.staging.root

    def bytes_path(self, session_id: uuid.UUID) -> Path:
        """Where a claimed session's bytes are."""
        return self.root / f"{CLAIM_PREFIX}{session_id.hex}"

    def intent_path(self, session_id: uuid.UUID) -> Path:
        """The session's intent file (and lock)."""
        return self.root / f"{CLAIM_PREFIX}{session_id.hex}{INTENT_SUFFIX}"

    def size(self, session_id: uuid.UUID) -> int | None:
        """The size of a claimed session's blob (read without the lock); None if unclaimed."""
        try:
            intent = Intent.decode(self.intent_path(session_id).read_bytes())
        except FileNotFoundError:
            intent = None
        if intent is not None:
            return intent.digests.size
        try:
            return self.bytes_path(session_id).stat().st_size
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def lock(self, session_id: uuid.UUID) -> Iterator[Claim]:
        """Hold the session's claim; an empty or finished one is removed on exit.

        Raises:
            ConflictError: another finalize of the session is running.
        """
        path = self.intent_path(session_id)
        claim = _lock(session_id, path)
        if claim is None:
            raise ConflictError(f"upload session {session_id} is being finalized")
        try:
            if claim.intent is None:
                self.give_back(session_id)
            yield claim
        finally:
            if claim.intent is None:
                self.give_back(session_id)
            if claim.done or claim.intent is None:
                path.unlink(missing_ok=True)
            os.close(claim.fd)

    def give_back(self, session_id: uuid.UUID) -> None:
        """Claimed bytes without an intent (nothing was written yet) go back to the session."""
        with contextlib.suppress(FileNotFoundError):
            self.bytes_path(session_id).replace(self.root / f"upload-{session_id.hex}")

    def take(self, session_id: uuid.UUID, claim: Claim, intent: Intent) -> None:
        """Claim the session's staged bytes (renamed, then ``intent`` made durable)."""
        (self.root / f"upload-{session_id.hex}").replace(self.bytes_path(session_id))
        claim.write(intent)

    async def complete(self, claim: Claim, *, actor: str) -> BlobRecord:
        """Store the claimed blob on its targets and record every copy; the blob.

        Raises:
            UploadNotFoundError: the claimed bytes are gone and no backend has a copy.
            BackendUnavailableError and database errors: the claim stays for a retry.
        """
        intent = claim.intent
        assert intent is not None
        await pause_at("finalize:claimed")
        d = intent.digests
        source = self.bytes_path(claim.session_id)
        if source.exists():
            stored = await self.registry.put_staged(
                source,
                d,
                expected=Expected(d.sha256, d.blake3, d.size),
                targets=intent.targets,
                keep_on_error=True,
            )
        else:
            stored = await self._adopt(intent)
            if not stored:
                raise UploadNotFoundError(
                    f"upload session {claim.session_id}: the claimed bytes are lost"
                )
        await pause_at("finalize:stored")
        blob, _ = await self.registry.record_stored(d.sha256, stored, actor=actor)
        await pause_at("finalize:recorded")
        return blob

    async def _adopt(self, intent: Intent) -> list[BlobStored]:
        """The copies of the intent's blob that its targets hold (recorded or not)."""
        copies = []
        for name in intent.targets:
            backend = self.registry.store.backends.get(name)
            if backend is None:
                continue
            info = await backend.head(intent.digests.sha256)
            if info is not None and info.size == intent.digests.size:
                copies.append(BlobStored.copy_of(intent.digests, name, info.key))
        return copies

    async def settle(self, live: set[uuid.UUID]) -> int:
        """Finish the claims nobody holds; how many sessions' claims were removed.

        A claim of a live session waits for the client's retried PUT (its
        bytes go back to the session when no intent was written). Of a
        session that is gone, the copies written are recorded and the
        claimed bytes removed.
        """
        settled = 0
        ids = {_session_of(p.name) for p in self.root.glob(f"{CLAIM_PREFIX}*")}
        for session_id in ids - {None}:
            assert session_id is not None
            claim = _lock(session_id, self.intent_path(session_id))
            if claim is None:
                continue  # a finalize is running
            try:
                if claim.intent is None:
                    if session_id in live:
                        self.give_back(session_id)
                    else:
                        self.bytes_path(session_id).unlink(missing_ok=True)
                    claim.done = True
                elif session_id not in live:
                    stored = await self._adopt(claim.intent)
                    if stored:
                        await self.registry.record_stored(
                            claim.intent.digests.sha256, stored, actor=claim.intent.actor
                        )
                    self.bytes_path(session_id).unlink(missing_ok=True)
                    claim.done = True
                    settled += 1
            finally:
                if claim.done:
                    claim.path.unlink(missing_ok=True)
                os.close(claim.fd)
        return settled


def expected_of(
    row: sa.Row[tuple[object, ...]], sha256: Digest | None, blake3: Digest | None
) -> Expected:
    """What a PUT's digests and its session's declared digests and size claim.

    Raises:
        InvalidInputError: a digest at finalize differs from the one the session began with.
    """
    return Expected(
        sha256=_agreed(sha256, row.expected_sha256, "sha256"),
        blake3=_agreed(blake3, row.expected_blake3, "blake3"),
        size=row.declared_size,
    )


async def check_retry(
    intent: Intent,
    row: sa.Row[tuple[object, ...]],
    sha256: Digest | None,
    blake3: Digest | None,
    body: AsyncIterable[bytes] | None,
) -> None:
    """A PUT retried after a claim: its body is drained unread, its digests must name the blob.

    Raises:
        DigestMismatchError, InvalidInputError: the PUT names another blob (the session stays).
    """
    if body is not None:
        async for _ in body:
            pass
    check_expected(intent.digests, expected_of(row, sha256, blake3))


def size_limit(row: sa.Row[tuple[object, ...]], limits: UploadSettings) -> int:
    """The most bytes the session may hold: its declared size, or the server's maximum."""
    declared = row.declared_size
    if isinstance(declared, int):
        return min(limits.max_blob_bytes, declared)
    return limits.max_blob_bytes


def _agreed(given: Digest | None, declared: bytes | None, algorithm: Algorithm) -> Digest | None:
    """The digest to check: the one declared at create, which ``given`` must repeat."""
    if declared is None:
        return given
    digest = Digest(algorithm, bytes(declared))
    if given is not None and not given.matches(digest):
        raise InvalidInputError(
            f"{algorithm} at finalize differs from the one the session began with"
        )
    return digest


def _lock(session_id: uuid.UUID, path: Path) -> Claim | None:
    """Lock ``path`` (created if absent) and read it; None when someone else holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = path.stat().st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # removed by its last holder meanwhile: lock the current file
            os.close(fd)
            continue
        data = os.pread(fd, 1 << 16, 0)
        return Claim(session_id, path, fd, Intent.decode(data))


def _session_of(name: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(name.removeprefix(CLAIM_PREFIX).removesuffix(INTENT_SUFFIX))
    except ValueError:
        return None
