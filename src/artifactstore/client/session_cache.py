"""Remembered upload sessions: which session ids a re-run of an upload may resume.

A session belongs to a DEPLOYMENT (one database that every replica shares,
DESIGN section 13), not to the URL it was opened through: behind a load
balancer any replica continues it, and two URLs (the balancer, one replica)
may reach the same deployment. So a record keeps both what the server said
its deployment is (the ``Artifactstore-Deployment`` answer header, when it
sends one) and the URL, and ``candidates`` offers, in order:

1. records of this deployment, or, where either side names none, of this URL;
2. records opened through another URL where either side names no deployment
   (that URL may reach this deployment: asking costs one ``HEAD``, and a
   foreign id is answered 404, after which the upload just starts over).

A record whose deployment is known and differs from this server's is never
offered: its id is not sent to a foreign deployment.

Best effort: a cache that cannot be read or written only costs the resume,
never the upload. One small JSON file per blob (a few records: the same file
may be on its way to several deployments), written atomically under the user
cache dir; concurrent writers may lose a record, never corrupt one.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["MAX_RECORDS", "RememberedSession", "SessionCache"]

MAX_RECORDS = 8
"""Records kept per blob (the newest); each is one ``HEAD`` at most on a re-run."""


@dataclass(frozen=True, slots=True)
class RememberedSession:
    """One upload session id, and where it was opened."""

    session: str
    server: str
    """The URL the session was opened through."""
    deployment: str | None
    """The deployment the server named then, or None when it named none."""
    size: int

    def same_place(self, server: str, deployment: str | None) -> bool:
        """Whether a 404 from ``server`` (``deployment``) proves this session is gone."""
        if self.deployment is not None and deployment is not None:
            return self.deployment == deployment
        return self.server == server

    def may_resume_at(self, deployment: str | None) -> bool:
        """False when both deployments are known and differ: never offer the id there."""
        return self.deployment is None or deployment is None or self.deployment == deployment


def _record(data: Any) -> RememberedSession | None:
    if not isinstance(data, dict):
        return None
    session, server, size = data.get("session"), data.get("server"), data.get("size")
    deployment = data.get("deployment")
    if not (isinstance(session, str) and isinstance(server, str) and isinstance(size, int)):
        return None
    if deployment is not None and not isinstance(deployment, str):
        return None
    return RememberedSession(session, server, deployment, size)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "artifactstore"


class SessionCache:
    """Upload session ids by blob blake3, under the user cache dir (see the module docstring)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or _cache_dir() / "uploads"

    def _file(self, blake3_hex: str) -> Path:
        return self.directory / f"{blake3_hex}.json"

    def _read(self, blake3_hex: str) -> list[RememberedSession]:
        try:
            data = json.loads(self._file(blake3_hex).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        # One record at the top level is the format before deployments (0.x).
        items = data.get("sessions", [data]) if isinstance(data, dict) else []
        records = [_record(item) for item in items] if isinstance(items, list) else []
        return [r for r in records if r is not None]

    def _write(self, blake3_hex: str, records: list[RememberedSession]) -> None:
        path = self._file(blake3_hex)
        if not records:
            with contextlib.suppress(OSError):
                path.unlink()
            return
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        body = json.dumps({"sessions": [asdict(r) for r in records[-MAX_RECORDS:]]})
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp.write_text(body, encoding="utf-8")
            tmp.replace(path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def candidates(
        self, server: str, deployment: str | None, blake3_hex: str, size: int
    ) -> list[RememberedSession]:
        """Sessions a re-run of this blob's upload may resume here, best first."""
        usable = [
            r for r in self._read(blake3_hex) if r.size == size and r.may_resume_at(deployment)
        ]
        usable.reverse()  # the newest first within each group
        return sorted(usable, key=lambda r: not r.same_place(server, deployment))

    def save(
        self, server: str, deployment: str | None, blake3_hex: str, size: int, session: str
    ) -> None:
        """Remember ``session``; it replaces any other record of the same place and blob."""
        new = RememberedSession(session, server, deployment, size)
        kept = [
            r
            for r in self._read(blake3_hex)
            if r.session != session and not r.same_place(server, deployment)
        ]
        self._write(blake3_hex, [*kept, new])

    def forget(self, blake3_hex: str, session: str) -> None:
        """Drop the record of ``session`` (idempotent)."""
        records = self._read(blake3_hex)
        kept = [r for r in records if r.session != session]
        if len(kept) != len(records):
            self._write(blake3_hex, kept)
