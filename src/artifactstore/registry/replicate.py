"""Replication: give every blob a readable copy on one more backend.

Implements ``artifactstore storage replicate --to NAME [--from NAME]``. It
walks the ``blobs`` view (keyset-paginated by sha256); a blob with a readable
copy (``stored`` or ``verified``; on ``source`` when given) and no readable
copy on the target is streamed across with ``BlobStore.copy``, which
re-hashes the bytes and refuses a corrupt source (the target then stores
nothing), and the new copy is recorded as ``v1.blob.stored``. A target copy
that is ``failed`` or ``missing`` counts as absent, so replication also
repairs. Without ``source`` the copies are tried verified-first; a corrupt
one is skipped for the next.

Resumable by nature: each copy is recorded as soon as it lands, and a second
run skips what is already there (a no-op when nothing is missing). Failures
are reported, not raised, so one bad blob does not stop the rest. This
module does not print, and never deletes anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from artifactstore.errors import ArtifactStoreError, ConfigError
from artifactstore.events import BlobStored
from artifactstore.registry import queries
from artifactstore.registry.journal import transaction
from artifactstore.registry.verify import Finding

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from artifactstore.digests import BlobDigests
    from artifactstore.registry.service import Registry

__all__ = ["ReplicateProgress", "ReplicateReport", "replicate"]

_PAGE = 500


@dataclass(frozen=True, slots=True)
class ReplicateProgress:
    """Blobs looked at so far, copies made, and bytes copied."""

    target: str
    checked: int
    copied: int
    bytes: int


@dataclass
class ReplicateReport:
    """The outcome of one replication run."""

    target: str
    source: str | None = None
    checked: int = 0
    copied: int = 0
    present: int = 0
    bytes: int = 0
    failures: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every blob that could be copied was."""
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        """Counts and failures, JSON-ready."""
        return {
            "ok": self.ok,
            "to": self.target,
            "from": self.source,
            "counts": {
                "checked": self.checked,
                "copied": self.copied,
                "present": self.present,
                "failed": len(self.failures),
                "bytes": self.bytes,
            },
            "failed": [f.to_json() for f in self.failures],
        }


@dataclass(frozen=True, slots=True)
class _Candidate:
    digests: BlobDigests
    readable: tuple[str, ...]  # verified copies first, then by name


async def _candidates(registry: Registry) -> AsyncIterator[_Candidate]:
    """Every blob with its readable copies on configured backends, by sha256."""
    configured = registry.store.backends
    after = b""
    while True:
        async with registry.engine.connect() as conn:
            page = await queries.blob_page(conn, after=after, limit=_PAGE)
            copies = await queries.readable_backends_of(conn, [d.sha256.raw for d in page])
        for d in page:
            readable = copies.get(d.sha256.raw, [])
            yield _Candidate(d, tuple(b for b in readable if b in configured))
        if len(page) < _PAGE:
            return
        after = page[-1].sha256.raw


async def replicate(
    registry: Registry,
    *,
    to: str,
    source: str | None = None,
    progress: Callable[[ReplicateProgress], None] | None = None,
    actor: str,
) -> ReplicateReport:
    """Copy every blob readable elsewhere (on ``source`` if given) and not on ``to``.

    Each copy is re-hashed on the way and recorded as ``v1.blob.stored``.
    Idempotent: a second run copies nothing. Blobs that cannot be copied
    (corrupt or unreadable sources) are listed in ``failures``.

    Raises:
        ConfigError: ``to`` or ``source`` is not a configured backend, or they are the same.
    """
    registry.store.backend(to)
    if source is not None:
        registry.store.backend(source)
        if source == to:
            raise ConfigError("--from and --to name the same backend")
    report = ReplicateReport(target=to, source=source)
    async for cand in _candidates(registry):
        report.checked += 1
        if to in cand.readable:
            report.present += 1
        else:
            sources = [source] if source is not None else [b for b in cand.readable if b != to]
            if source is None or source in cand.readable:
                await _copy_one(registry, cand, sources, report, actor=actor)
        if progress is not None:
            progress(ReplicateProgress(to, report.checked, report.copied, report.bytes))
    return report


async def _copy_one(
    registry: Registry,
    cand: _Candidate,
    sources: list[str],
    report: ReplicateReport,
    *,
    actor: str,
) -> None:
    to = report.target
    sha = cand.digests.sha256
    if not sources:
        report.failures.append(Finding(sha.hex, to, "no readable copy to copy from"))
        return
    reasons = []
    for name in sources:
        try:
            info = await registry.store.copy(sha, cand.digests, name, to)
        except ArtifactStoreError as exc:
            reasons.append(f"{name}: {' '.join(exc.message.split())}")
            continue
        async with transaction(registry.engine, actor=actor) as tx:
            await tx.record_copies([BlobStored.copy_of(cand.digests, to, info.key)])
        report.copied += 1
        report.bytes += cand.digests.size
        return
    report.failures.append(Finding(sha.hex, to, "copy failed: " + "; ".join(reasons)))
