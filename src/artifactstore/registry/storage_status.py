"""The state of storage as operators see it: each backend's health and copies by state.

One place answers "how is storage doing" for ``/v1/storage``, ``/readyz``,
``/metrics`` and ``artifactstore storage status``, all from the
``storage_locations`` view (through ``queries``) plus each backend's cheap
``health()``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from artifactstore.errors import DatabaseUnavailableError
from artifactstore.registry import queries
from artifactstore.views import LocationState

if TYPE_CHECKING:
    from artifactstore.registry.service import Registry

__all__ = [
    "PROBLEM_STATES",
    "STATES",
    "BackendStatus",
    "LocationProblem",
    "location_counts",
    "location_problems",
    "storage_status",
]

STATES = (
    LocationState.STORED,
    LocationState.VERIFIED,
    LocationState.FAILED,
    LocationState.MISSING,
    LocationState.DELETED,
)
PROBLEM_STATES = (LocationState.FAILED, LocationState.MISSING)


@dataclass(frozen=True, slots=True)
class BackendStatus:
    """One backend: what it is, whether it answers, and its copies by state."""

    name: str
    kind: str
    default: bool
    healthy: bool
    detail: str
    locations: dict[str, int]

    @property
    def problems(self) -> int:
        """Copies that failed verification or went missing."""
        return sum(self.locations[s] for s in PROBLEM_STATES)


@dataclass(frozen=True, slots=True)
class LocationProblem:
    """A copy in state failed or missing, and why."""

    sha256: str
    backend: str
    state: str
    detail: str


async def location_counts(registry: Registry) -> dict[str, dict[str, int]]:
    """Copies per backend and state; every configured backend and state present."""
    async with registry.engine.connect() as conn:
        rows = await queries.count_locations(conn)
    counts = {name: dict.fromkeys(STATES, 0) for name in registry.store.backends}
    for backend, state, n in rows:
        counts.setdefault(backend, dict.fromkeys(STATES, 0))[state] = n
    return counts


async def _counts_within(registry: Registry, within: float | None) -> dict[str, dict[str, int]]:
    try:
        return await asyncio.wait_for(location_counts(registry), within)
    except TimeoutError:
        raise DatabaseUnavailableError(f"the database gave no answer within {within:g} s") from None


async def storage_status(registry: Registry, *, within: float | None = None) -> list[BackendStatus]:
    """Every configured backend with its health and location counts.

    With ``within`` (the readiness probe's), the database and each backend
    are asked at once and each gets that long: a backend that does not answer
    is reported unhealthy (``BlobStore.health``).

    Raises:
        DatabaseUnavailableError: the counts did not come within ``within`` seconds.
    """
    counts, health = await asyncio.gather(
        _counts_within(registry, within), registry.store.health(within=within)
    )
    default = registry.store.settings.default
    return [
        BackendStatus(
            name=name,
            kind=backend.kind,
            default=name == default,
            healthy=health[name].ok,
            detail=health[name].detail,
            locations=counts[name],
        )
        for name, backend in registry.store.backends.items()
    ]


async def location_problems(registry: Registry, *, limit: int) -> list[LocationProblem]:
    """Up to ``limit`` failed or missing copies, by backend and sha256."""
    async with registry.engine.connect() as conn:
        rows = await queries.locations_in_states(conn, PROBLEM_STATES, limit=limit)
    return [
        LocationProblem(sha.hex, backend, state, detail) for sha, backend, state, detail in rows
    ]
