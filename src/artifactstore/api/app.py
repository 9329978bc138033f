"""The FastAPI application: lifespan, routers, middleware, error handlers.

``create_app`` builds an app for given settings. The lifespan opens the
registry (database + backends) unless one is handed in (tests), starts the
event notifier and the periodic jobs (``_jobs`` lists them all; each runs on
one replica at a time unless shared, ``registry.periodic``), and on the embedded default
supervises the cluster (``db.supervisor`` restarts a dead postmaster),
writes an admin token to ``<data_dir>/admin-token`` (mode 0600) for the CLI
on the same machine, and listens on ``<data_dir>/handoff.sock`` for
same-host uploads (``api.handoff``). Shutdown closes everything in reverse
order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

import artifactstore
from artifactstore.api.body_timeout import BodyTimeoutMiddleware
from artifactstore.api.deployment import Deployment, DeploymentHeaderMiddleware
from artifactstore.api.errors import install_error_handlers
from artifactstore.api.handoff import HandoffListener
from artifactstore.api.metrics import Metrics, MetricsMiddleware
from artifactstore.api.notify import EventNotifier
from artifactstore.api.routes import blobs, events, packages, system, uploads
from artifactstore.api.services import Lifecycle, Services
from artifactstore.db.supervisor import Supervisor
from artifactstore.protocol import ADMIN_TOKEN_FILE, HANDOFF_SOCKET
from artifactstore.registry import Registry, Tokens, Uploads
from artifactstore.registry.periodic import Job, Periodic

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from artifactstore.config import Settings

__all__ = ["create_app", "ensure_admin_token"]

log = logging.getLogger("artifactstore.api")


async def ensure_admin_token(tokens: Tokens, data_dir: Path) -> Path:
    """Make ``<data_dir>/admin-token`` hold a live admin token; create one if needed."""
    path = data_dir / ADMIN_TOKEN_FILE
    try:
        current = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        current = ""
    if current and await tokens.authenticate(current) is not None:
        return path
    name = f"local-admin-{os.urandom(4).hex()}"
    token = await tokens.create(name, "admin", actor="system:bootstrap")
    tmp = path.with_name(f".{ADMIN_TOKEN_FILE}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    tmp.replace(path)
    log.info("wrote a local admin token to %s", path)
    return path


def _jobs(settings: Settings, uploads_: Uploads) -> list[Job]:
    """Every periodic job of a replica, in one place; ``shared=True`` runs on each replica."""

    async def expire() -> None:
        removed = await uploads_.expire()
        if removed:
            log.info("expired %d upload session(s)", removed)

    every = settings.uploads.expiry_interval_seconds
    return [
        Job("upload-expiry", every, expire),
        Job("upload-staging-sweep", every, uploads_.sweep_local, shared=True),
    ]


def create_app(
    settings: Settings,
    *,
    registry: Registry | None = None,
    host: str | None = None,
    bootstrap_token: bool | None = None,
    lifecycle: Lifecycle | None = None,
    replica: str | None = None,
) -> FastAPI:
    """An app serving the REST API for ``settings``.

    ``host`` is the address the server binds (it decides anonymous reads);
    ``bootstrap_token`` defaults to True on the embedded database;
    ``lifecycle`` is how ``serve`` tells ``/readyz`` it drains; ``replica``
    names this process in ``artifactstore_replica_info`` (default: an id made now).
    """
    bind = host or settings.server.host
    metrics = Metrics(replica)
    state = lifecycle or Lifecycle()
    deployment = Deployment()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = registry is None
        reg = registry if registry is not None else await Registry.open(settings)
        notifier = EventNotifier(reg.engine)
        jobs = Periodic(reg.engine, observe=metrics.job_ticked)
        supervisor: asyncio.Task[None] | None = None
        handoff: HandoffListener | None = None
        try:
            if reg.database.embedded is not None:
                watch = Supervisor(reg.database.embedded, reg.engine, on_revived=notifier.restart)
                supervisor = asyncio.create_task(watch.run(), name="postgres-supervisor")
            await notifier.start()
            await deployment.load(reg.engine)
            uploads_ = Uploads(reg)
            tokens = Tokens(reg.engine)
            embedded = settings.database.url is None
            if bootstrap_token if bootstrap_token is not None else embedded:
                await ensure_admin_token(tokens, settings.data_dir)
            handoff = HandoffListener(settings.data_dir / HANDOFF_SOCKET, uploads_, metrics)
            handoff.start()
            app.state.services = Services(
                settings=settings,
                registry=reg,
                uploads=uploads_,
                tokens=tokens,
                metrics=metrics,
                notifier=notifier,
                anonymous_read=settings.api_anonymous_read(bind),
                handoff=handoff if handoff.active else None,
                lifecycle=state,
            )
            jobs.start(_jobs(settings, uploads_))
            yield
        finally:
            if handoff is not None:
                await handoff.stop()
            await jobs.stop()
            if supervisor is not None:
                supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await supervisor
            await notifier.stop()
            if owned:
                await reg.aclose()

    app = FastAPI(
        title="artifactstore",
        version=artifactstore.__version__,
        summary="A content-addressed artifact registry",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for module in (uploads, blobs, packages, events, system):
        app.include_router(module.router)
    app.add_middleware(BodyTimeoutMiddleware, seconds=settings.server.body_timeout_seconds)
    app.add_middleware(MetricsMiddleware, metrics=metrics, tracing=settings.tracing.enabled)
    app.add_middleware(DeploymentHeaderMiddleware, deployment=deployment)
    return app
