"""Health, readiness, storage overview and Prometheus metrics.

``/healthz`` answers while the process runs. ``/readyz`` checks the database
and every backend, and reports ``degraded`` while any storage location is
``failed`` or ``missing`` (a verify pass that succeeds clears it); it is 503
only when the database or a backend is unreachable.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from artifactstore.api.services import ActorRead, ServicesDep
from artifactstore.db.tables import storage_locations
from artifactstore.events import last_seq
from artifactstore.views import LocationState

__all__ = ["location_counts", "router"]

router = APIRouter(tags=["system"])

STATES = (
    LocationState.STORED,
    LocationState.VERIFIED,
    LocationState.FAILED,
    LocationState.MISSING,
    LocationState.DELETED,
)


async def location_counts(services: ServicesDep) -> dict[str, dict[str, int]]:
    """Locations per backend and state, every state present (zero when none)."""
    async with services.registry.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(
                    storage_locations.c.backend, storage_locations.c.state, sa.func.count()
                ).group_by(storage_locations.c.backend, storage_locations.c.state)
            )
        ).all()
    counts = {name: dict.fromkeys(STATES, 0) for name in services.registry.store.backends}
    for backend, state, n in rows:
        counts.setdefault(backend, dict.fromkeys(STATES, 0))[state] = int(n)
    return counts


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """Always ok while the process serves requests."""
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: database, backends, storage integrity")
async def readyz(services: ServicesDep) -> Response:
    """ok, degraded (failed/missing copies) or unavailable (503)."""
    report: dict[str, Any] = {"status": "ok", "database": "ok", "backends": {}}
    status_code = 200
    try:
        counts = await location_counts(services)
    except Exception as exc:  # noqa: BLE001 - any database failure means not ready
        return JSONResponse(
            {"status": "unavailable", "database": f"error: {type(exc).__name__}"}, status_code=503
        )
    health = await services.registry.store.health()
    for name, h in health.items():
        report["backends"][name] = {"healthy": h.ok, "detail": h.detail}
        if not h.ok:
            report["status"] = "unavailable"
            status_code = 503
    bad = {
        name: {"failed": c[LocationState.FAILED], "missing": c[LocationState.MISSING]}
        for name, c in counts.items()
        if c[LocationState.FAILED] or c[LocationState.MISSING]
    }
    if bad:
        report["problems"] = bad
        if report["status"] == "ok":
            report["status"] = "degraded"
    return JSONResponse(report, status_code=status_code)


@router.get("/v1/storage", tags=["storage"], summary="Backends, their health and location counts")
async def storage(services: ServicesDep, _actor: ActorRead) -> dict[str, Any]:
    """Each backend: type, health, locations by state."""
    counts = await location_counts(services)
    health = await services.registry.store.health()
    backends = []
    for name, backend in services.registry.store.backends.items():
        h = health[name]
        backends.append(
            {
                "name": name,
                "type": backend.kind,
                "default": name == services.registry.store.settings.default,
                "healthy": h.ok,
                "detail": h.detail,
                "locations": counts.get(name, dict.fromkeys(STATES, 0)),
            }
        )
    return {"backends": backends}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    """Counters from the middleware plus state gauges refreshed now."""
    m = services.metrics
    m.active_uploads.set(await services.uploads.count_active())
    async with services.registry.engine.connect() as conn:
        m.events_head.set(await last_seq(conn))
    for backend, states in (await location_counts(services)).items():
        for state, n in states.items():
            m.locations.labels(backend, state).set(n)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
