"""The deployment's id on every answer, so clients know which sessions are this deployment's.

Several replicas behind a balancer, or several URLs of one server, are one
deployment: one database. Upload sessions belong to it, not to a URL, and a
client that remembers a session for resume (``client.session_cache``) keys
it by this id - so a re-run through another URL of the deployment resumes,
and a URL that now reaches another deployment is never sent a foreign
session id. The id is 16 random bytes made once per database
(``server_secrets`` row ``deployment-id``); it identifies, it grants nothing.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from artifactstore.protocol import DEPLOYMENT_HEADER
from artifactstore.registry.server_secrets import shared_secret

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DEPLOYMENT_ROW", "Deployment", "DeploymentHeaderMiddleware"]

DEPLOYMENT_ROW = "deployment-id"


class Deployment:
    """The deployment id once loaded (the app's lifespan loads it; requests read it)."""

    def __init__(self) -> None:
        self.id: str | None = None

    async def load(self, engine: AsyncEngine) -> str:
        """Read (or create, for the first replica ever) this database's deployment id."""
        raw = await shared_secret(engine, DEPLOYMENT_ROW, lambda: secrets.token_bytes(16))
        self.id = raw.hex()
        return self.id


class DeploymentHeaderMiddleware:
    """Adds ``Artifactstore-Deployment`` to every HTTP answer once the id is known."""

    def __init__(self, app: ASGIApp, deployment: Deployment) -> None:
        self.app = app
        self.deployment = deployment

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through; stamp the response head."""
        known = self.deployment.id
        if scope["type"] != "http" or known is None:
            await self.app(scope, receive, send)
            return
        header = (DEPLOYMENT_HEADER.lower().encode(), known.encode())

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        await self.app(scope, receive, stamped)
