"""Health, readiness, storage overview and Prometheus metrics.

``/healthz`` answers while the process runs. ``/readyz`` checks the database
and every backend, and reports ``degraded`` while any storage location is
``failed`` or ``missing`` (a verify pass that succeeds clears it); it is 503
only when the database or a backend is unreachable, or while the replica
drains before it stops (``{"status": "draining"}``, at once: load balancers
move away while in-flight requests finish; ``cli.serve``). Each of those checks
has ``server.readiness_timeout_seconds`` to answer (all run at once), so the
probe answers promptly and names what is slow even when an endpoint hangs.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from artifactstore.api.services import ActorRead, Services, ServicesDep
from artifactstore.errors import ArtifactStoreError
from artifactstore.events import last_seq
from artifactstore.registry.storage_status import (
    PROBLEM_STATES,
    location_counts,
    storage_status,
)

__all__ = ["router"]

router = APIRouter(tags=["system"])


def _deadline(services: Services) -> float:
    """How long the database and each backend get to answer a health question."""
    return services.settings.server.readiness_timeout_seconds


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """Always ok while the process serves requests."""
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: database, backends, storage integrity")
async def readyz(services: ServicesDep) -> Response:
    """ok, degraded (failed/missing copies), unavailable or draining (503)."""
    if services.lifecycle.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    report: dict[str, Any] = {"status": "ok", "database": "ok", "backends": {}}
    status_code = 200
    try:
        backends = await storage_status(services.registry, within=_deadline(services))
    except Exception as exc:  # noqa: BLE001 - any database failure means not ready
        why = exc.message if isinstance(exc, ArtifactStoreError) else type(exc).__name__
        return JSONResponse({"status": "unavailable", "database": f"error: {why}"}, status_code=503)
    for b in backends:
        report["backends"][b.name] = {"healthy": b.healthy, "detail": b.detail}
        if not b.healthy:
            report["status"] = "unavailable"
            status_code = 503
    bad = {b.name: {s: b.locations[s] for s in PROBLEM_STATES} for b in backends if b.problems}
    if bad:
        report["problems"] = bad
        if report["status"] == "ok":
            report["status"] = "degraded"
    return JSONResponse(report, status_code=status_code)


@router.get("/v1/storage", tags=["storage"], summary="Backends, their health and location counts")
async def storage(services: ServicesDep, _actor: ActorRead) -> dict[str, Any]:
    """Each backend: type, health, locations by state."""
    backends = await storage_status(services.registry, within=_deadline(services))
    return {
        "backends": [
            {
                "name": b.name,
                "type": b.kind,
                "default": b.default,
                "healthy": b.healthy,
                "detail": b.detail,
                "locations": b.locations,
            }
            for b in backends
        ]
    }


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(services: ServicesDep, _actor: ActorRead) -> Response:
    """Counters from the middleware plus state gauges refreshed now.

    A read like any other: anonymous only where anonymous reads are allowed
    (loopback), else a token with the read scope (a scraper's own token).
    """
    m = services.metrics
    m.active_uploads.set(await services.uploads.count_active())
    async with services.registry.engine.connect() as conn:
        m.events_head.set(await last_seq(conn))
    for backend, states in (await location_counts(services.registry)).items():
        for state, n in states.items():
            m.locations.labels(backend, state).set(n)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
