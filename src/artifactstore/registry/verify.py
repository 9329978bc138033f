"""The verify pass: re-read every recorded copy, re-hash it, and record what was found.

Implements ``artifactstore storage verify`` (DESIGN section 6). For each
chosen backend it walks the ``storage_locations`` view (keyset-paginated by
sha256, ``deleted`` copies skipped), streams each object back through the
backend, recomputes sha256 and blake3 in one pass (``DualHasher``, hashing
off the event loop so several objects verify at once) and compares them and
the size with the ``blobs`` view. Each location gets one event, appended in
small journal transactions (``journal.transaction``):

* ``v1.storage.location_verified`` - both digests and the size matched (a
  copy that was ``failed`` or ``missing`` becomes ``verified`` again, which
  clears ``/readyz``'s degraded state);
* ``v1.storage.location_failed`` - reason ``size mismatch``, ``sha256
  mismatch``, ``blake3 mismatch`` or ``unreadable: <why>``;
* ``v1.storage.location_missing`` - the backend has no such object.

Then it lists the backend's objects (``iter_objects``) and reports orphans:
objects no live location on that backend names. Orphans are reported, never
deleted. A backend that is unreachable (its health check fails, before or
during the pass) aborts the pass with ``BackendUnavailableError`` rather than
marking every copy failed. This module does not print; the CLI does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from artifactstore.digests import Digest, DualHasher
from artifactstore.errors import (
    ArtifactStoreError,
    BackendUnavailableError,
    BlobNotFoundError,
)
from artifactstore.events import LocationFailed, LocationMissing, LocationVerified
from artifactstore.registry import queries
from artifactstore.registry.journal import transaction
from artifactstore.views import LocationState

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from artifactstore.digests import BlobDigests
    from artifactstore.events import EventPayload
    from artifactstore.registry.service import Registry
    from artifactstore.storage.spi import ObjectInfo, ObjectStream, StorageBackend

__all__ = [
    "DEFAULT_CONCURRENCY",
    "Finding",
    "VerifyProgress",
    "VerifyReport",
    "verify_storage",
]

DEFAULT_CONCURRENCY = 4
_PAGE = 500
# Events are appended in transactions of at most this many locations.
_FLUSH_EVERY = 50
_ORPHAN_BATCH = 1000

REASON_SIZE = "size mismatch"
REASON_SHA256 = "sha256 mismatch"
REASON_BLAKE3 = "blake3 mismatch"
REASON_UNREADABLE = "unreadable"


@dataclass(frozen=True, slots=True)
class Finding:
    """One object that did not check out: its sha256 (hex), backend and why."""

    sha256: str
    backend: str
    reason: str

    def to_json(self) -> dict[str, str]:
        """A JSON-ready mapping."""
        return {"sha256": self.sha256, "backend": self.backend, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class VerifyProgress:
    """Where a pass is: ``phase`` is ``verify`` (locations) or ``orphans`` (listing)."""

    backend: str
    phase: str
    done: int
    total: int
    bytes_done: int
    total_bytes: int


@dataclass
class VerifyReport:
    """The outcome of a verify pass over one or more backends."""

    backends: tuple[str, ...] = ()
    checked: int = 0
    verified: int = 0
    bytes: int = 0
    failures: list[Finding] = field(default_factory=list)
    missing_objects: list[Finding] = field(default_factory=list)
    orphan_objects: list[Finding] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """Locations whose bytes did not match or could not be read."""
        return len(self.failures)

    @property
    def missing(self) -> int:
        """Locations whose object is absent."""
        return len(self.missing_objects)

    @property
    def orphans(self) -> int:
        """Objects no live location names."""
        return len(self.orphan_objects)

    @property
    def ok(self) -> bool:
        """True only when nothing failed, nothing is missing and there are no orphans."""
        return not (self.failures or self.missing_objects or self.orphan_objects)

    def to_json(self) -> dict[str, Any]:
        """Counts and every failed, missing and orphan object, JSON-ready."""
        return {
            "ok": self.ok,
            "backends": list(self.backends),
            "counts": {
                "checked": self.checked,
                "verified": self.verified,
                "failed": self.failed,
                "missing": self.missing,
                "orphans": self.orphans,
                "bytes": self.bytes,
            },
            "failed": [f.to_json() for f in self.failures],
            "missing": [f.to_json() for f in self.missing_objects],
            "orphans": [f.to_json() for f in self.orphan_objects],
        }


@dataclass(frozen=True, slots=True)
class _Location:
    sha256: Digest
    blake3: bytes
    size: int


@dataclass(frozen=True, slots=True)
class _Outcome:
    location: _Location
    payload: EventPayload
    read_bytes: int


async def _locations(registry: Registry, backend: str) -> AsyncIterator[_Location]:
    """Live locations on ``backend`` with the blob's digests, keyset-paginated by sha256."""
    after = b""
    while True:
        async with registry.engine.connect() as conn:
            page = await queries.live_locations(conn, backend, after=after, limit=_PAGE)
        for d in page:
            yield _Location(d.sha256, d.blake3.raw, d.size)
        if len(page) < _PAGE:
            return
        after = page[-1].sha256.raw


async def _totals(registry: Registry, backend: str) -> tuple[int, int]:
    async with registry.engine.connect() as conn:
        return await queries.live_totals(conn, backend)


async def _ensure_reachable(backend: StorageBackend) -> None:
    health = await backend.health()
    if not health.ok:
        raise BackendUnavailableError(
            f"storage backend {backend.name!r} is unreachable: {health.detail}",
            backend=backend.name,
        )


def _unreadable(backend: str, loc: _Location, exc: BaseException) -> LocationFailed:
    text = exc.message if isinstance(exc, ArtifactStoreError) else str(exc)
    reason = f"{REASON_UNREADABLE}: {' '.join((text or type(exc).__name__).split())}"
    return LocationFailed(sha256=loc.sha256.raw, backend=backend, reason=reason[:500])


def _mismatch(loc: _Location, got: BlobDigests) -> str | None:
    """The reason the re-read digests disagree with the blob's, or None."""
    if got.size != loc.size:
        return REASON_SIZE
    if not got.sha256.matches(loc.sha256):
        return REASON_SHA256
    if not got.blake3.matches(Digest("blake3", loc.blake3)):
        return REASON_BLAKE3
    return None


async def _hash(backend: StorageBackend, stream: ObjectStream) -> BlobDigests:
    """Hash a stream to its end; sha256 and blake3 run on two threads, off the loop."""
    hasher = DualHasher()
    try:
        async for chunk in stream.chunks:
            await asyncio.to_thread(hasher.update, chunk)
    except BackendUnavailableError:
        await _ensure_reachable(backend)
        raise
    finally:
        await stream.aclose()
    return hasher.result()


async def _check(backend: StorageBackend, loc: _Location) -> _Outcome:
    """Re-read one object and decide its event."""
    name = backend.name
    sha = loc.sha256.raw
    try:
        stream = await backend.get(loc.sha256)
    except BlobNotFoundError:
        return _Outcome(loc, LocationMissing(sha256=sha, backend=name), 0)
    except (ArtifactStoreError, OSError) as exc:
        if isinstance(exc, BackendUnavailableError):
            await _ensure_reachable(backend)
        return _Outcome(loc, _unreadable(name, loc, exc), 0)
    if stream.info.size != loc.size:
        await stream.aclose()
        return _Outcome(loc, LocationFailed(sha256=sha, backend=name, reason=REASON_SIZE), 0)
    try:
        got = await _hash(backend, stream)
    except (ArtifactStoreError, OSError) as exc:
        return _Outcome(loc, _unreadable(name, loc, exc), 0)
    reason = _mismatch(loc, got)
    if reason is None:
        return _Outcome(loc, LocationVerified(sha256=sha, backend=name), got.size)
    return _Outcome(loc, LocationFailed(sha256=sha, backend=name, reason=reason), got.size)


class _BackendPass:
    """One backend's location walk: a producer, ``concurrency`` checkers, batched events."""

    def __init__(
        self,
        registry: Registry,
        backend: StorageBackend,
        report: VerifyReport,
        *,
        progress: Callable[[VerifyProgress], None] | None,
        actor: str,
    ) -> None:
        self.registry = registry
        self.backend = backend
        self.report = report
        self.progress = progress
        self.actor = actor
        self.pending: list[_Outcome] = []
        self.flush_lock = asyncio.Lock()
        self.done = self.done_bytes = self.total = self.total_bytes = 0

    async def flush(self) -> None:
        """Append the events of checked locations in one transaction."""
        async with self.flush_lock:
            batch = self.pending[:]
            del self.pending[:]
            if not batch:
                return
            async with transaction(self.registry.engine, actor=self.actor) as tx:
                await tx.record(*(o.payload for o in batch))
            for o in batch:
                _count(self.report, self.backend.name, o)

    async def produce(self, queue: asyncio.Queue[_Location | None], workers: int) -> None:
        """Feed every live location, then one stop mark per worker."""
        async for loc in _locations(self.registry, self.backend.name):
            await queue.put(loc)
        for _ in range(workers):
            await queue.put(None)

    async def work(self, queue: asyncio.Queue[_Location | None]) -> None:
        """Check locations until the stop mark."""
        while (loc := await queue.get()) is not None:
            self.pending.append(await _check(self.backend, loc))
            self.done += 1
            self.done_bytes += loc.size
            if self.progress is not None:
                self.progress(
                    VerifyProgress(
                        self.backend.name,
                        "verify",
                        self.done,
                        self.total,
                        self.done_bytes,
                        self.total_bytes,
                    )
                )
            if len(self.pending) >= _FLUSH_EVERY:
                await self.flush()

    async def run(self, concurrency: int) -> None:
        """Walk, check and record every live location of the backend."""
        self.total, self.total_bytes = await _totals(self.registry, self.backend.name)
        queue: asyncio.Queue[_Location | None] = asyncio.Queue(maxsize=2 * concurrency)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.produce(queue, concurrency))
                for _ in range(concurrency):
                    tg.create_task(self.work(queue))
        except BaseExceptionGroup as group:
            # Callers (and the CLI's exit-code table) expect the error itself.
            raise _leading(group) from None
        finally:
            # What was checked before a failure or an interrupt is still recorded.
            await asyncio.shield(self.flush())


def _count(report: VerifyReport, backend: str, outcome: _Outcome) -> None:
    report.checked += 1
    report.bytes += outcome.read_bytes
    payload = outcome.payload
    hex_ = outcome.location.sha256.hex
    if isinstance(payload, LocationVerified):
        report.verified += 1
    elif isinstance(payload, LocationFailed):
        report.failures.append(Finding(hex_, backend, payload.reason))
    else:
        report.missing_objects.append(Finding(hex_, backend, "object not found"))


def _leading(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from a failed task group: unreachable backends first."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(reversed(exc.exceptions))
        else:
            leaves.append(exc)
    for exc in leaves:
        if isinstance(exc, BackendUnavailableError):
            return exc
    return leaves[0]


async def _find_orphans(
    registry: Registry,
    backend: StorageBackend,
    report: VerifyReport,
    progress: Callable[[VerifyProgress], None] | None,
) -> None:
    name = backend.name
    listed = 0

    async def check(batch: list[ObjectInfo]) -> None:
        async with registry.engine.connect() as conn:
            states = await queries.location_states(conn, name, [i.sha256.raw for i in batch])
        for info in batch:
            state = states.get(info.sha256.raw)
            if state is None:
                report.orphan_objects.append(Finding(info.sha256.hex, name, "no location recorded"))
            elif state == LocationState.DELETED:
                report.orphan_objects.append(Finding(info.sha256.hex, name, "location was deleted"))

    batch: list[ObjectInfo] = []
    async for info in backend.iter_objects():
        batch.append(info)
        listed += 1
        if len(batch) >= _ORPHAN_BATCH:
            await check(batch)
            batch = []
            if progress is not None:
                progress(VerifyProgress(name, "orphans", listed, 0, 0, 0))
    if batch:
        await check(batch)
    if progress is not None:
        progress(VerifyProgress(name, "orphans", listed, listed, 0, 0))


async def verify_storage(
    registry: Registry,
    *,
    backends: Sequence[str] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: Callable[[VerifyProgress], None] | None = None,
    actor: str,
) -> VerifyReport:
    """Re-read and re-hash every live copy on the chosen backends (all when None).

    Appends one location event per copy (committed in batches as the pass
    goes, so an interrupted pass keeps what it found) and reports orphans
    without deleting them. ``report.ok`` is True only when everything matched.

    Raises:
        ConfigError: a named backend is not configured (nothing is checked).
        BackendUnavailableError: a backend is unreachable; events already
            appended for earlier objects stay.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    names = tuple(dict.fromkeys(backends)) if backends else tuple(registry.store.backends)
    chosen = [registry.store.backend(n) for n in names]  # ConfigError before any work
    report = VerifyReport(backends=names)
    for backend in chosen:
        await _ensure_reachable(backend)
        await _BackendPass(registry, backend, report, progress=progress, actor=actor).run(
            concurrency
        )
        await _find_orphans(registry, backend, report, progress)
    return report
