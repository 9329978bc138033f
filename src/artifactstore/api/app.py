"""The FastAPI application: lifespan, routers, middleware, error handlers.

``create_app`` builds an app for given settings. The lifespan opens the
registry (database + backends) unless one is handed in (tests), starts the
event notifier and the upload-expiry loop, and on the embedded default
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
from artifactstore.api.errors import install_error_handlers
from artifactstore.api.handoff import HandoffListener
from artifactstore.api.metrics import Metrics, MetricsMiddleware
from artifactstore.api.notify import EventNotifier
from artifactstore.api.routes import blobs, events, packages, system, uploads
from artifactstore.api.services import Services
from artifactstore.db.supervisor import Supervisor
from artifactstore.protocol import ADMIN_TOKEN_FILE, HANDOFF_SOCKET
from artifactstore.registry import Registry, Tokens, Uploads

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from artifactstore.config import Settings

__all__ = ["create_app", "ensure_admin_token"]

log = logging.getLogger("artifactstore.api")

EXPIRY_INTERVAL_SECONDS = 60.0


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


async def _expire_loop(uploads_: Uploads) -> None:
    while True:
        try:
            removed = await uploads_.expire()
            if removed:
                log.info("expired %d upload session(s)", removed)
        except Exception:
            log.exception("upload expiry failed; retrying")
        await asyncio.sleep(EXPIRY_INTERVAL_SECONDS)


def create_app(
    settings: Settings,
    *,
    registry: Registry | None = None,
    host: str | None = None,
    bootstrap_token: bool | None = None,
) -> FastAPI:
    """An app serving the REST API for ``settings``.

    ``host`` is the address the server binds (it decides anonymous reads);
    ``bootstrap_token`` defaults to True on the embedded database.
    """
    bind = host or settings.server.host
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = registry is None
        reg = registry if registry is not None else await Registry.open(settings)
        notifier = EventNotifier(reg.engine)
        expiry: asyncio.Task[None] | None = None
        supervisor: asyncio.Task[None] | None = None
        handoff: HandoffListener | None = None
        try:
            if reg.database.embedded is not None:
                watch = Supervisor(reg.database.embedded, reg.engine, on_revived=notifier.restart)
                supervisor = asyncio.create_task(watch.run(), name="postgres-supervisor")
            await notifier.start()
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
            )
            expiry = asyncio.create_task(_expire_loop(uploads_), name="upload-expiry")
            yield
        finally:
            if handoff is not None:
                await handoff.stop()
            for task in (expiry, supervisor):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
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
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
