"""The services one API process holds, built in the lifespan and injected per request.

Routes never build services themselves: they ask for ``ServicesDep`` (or a
narrower dependency) so tests can swap one after startup (STYLE section 6).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from artifactstore.errors import ForbiddenError, UnauthorizedError
from artifactstore.registry.tokens import scope_allows

if TYPE_CHECKING:
    from artifactstore.api.handoff import HandoffListener
    from artifactstore.api.metrics import Metrics
    from artifactstore.api.notify import EventNotifier
    from artifactstore.config import Settings
    from artifactstore.registry import Registry, Tokens, Uploads

__all__ = ["ActorAdmin", "ActorRead", "ActorWrite", "Lifecycle", "Services", "ServicesDep"]

ANONYMOUS = "anonymous"


@dataclass
class Lifecycle:
    """Whether this replica is stopping: ``/readyz`` answers 503 so balancers route elsewhere.

    ``cli.serve`` sets ``draining`` on SIGTERM/SIGINT and keeps serving for
    ``server.drain_seconds`` before it closes the listeners.
    """

    draining: bool = False


@dataclass
class Services:
    """Everything a request handler may need."""

    settings: Settings
    registry: Registry
    uploads: Uploads
    tokens: Tokens
    metrics: Metrics
    notifier: EventNotifier
    anonymous_read: bool
    handoff: HandoffListener | None = None
    lifecycle: Lifecycle = field(default_factory=Lifecycle)


def get_services(request: Request) -> Services:
    """The app's services (set by the lifespan)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("Authorization must be 'Bearer <token>'")
    return token.strip()


def _requires(scope: str) -> object:
    async def actor(request: Request, services: ServicesDep) -> str:
        token = _bearer(request)
        if token is None:
            if scope == "read" and services.anonymous_read:
                return ANONYMOUS
            raise UnauthorizedError(f"this operation needs a token with scope {scope!r}")
        info = await services.tokens.authenticate(token)
        if info is None:
            raise UnauthorizedError("unknown or revoked token")
        if not scope_allows(info.scope, scope):
            raise ForbiddenError(f"token {info.name!r} has scope {info.scope!r}; needs {scope!r}")
        return f"token:{info.name}"

    return actor


ActorRead = Annotated[str, Depends(_requires("read"))]
ActorWrite = Annotated[str, Depends(_requires("write"))]
ActorAdmin = Annotated[str, Depends(_requires("admin"))]
