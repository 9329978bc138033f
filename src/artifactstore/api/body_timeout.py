"""A deadline for request bodies that stop arriving: an uploader that stalls mid-PATCH.

Without it the app waits for the next piece of a body for as long as the
connection stays open, and a stalled ``PATCH /v1/uploads/{id}`` holds its
session (a second append is refused as a conflict) until the client goes
away. ``BodyTimeoutMiddleware`` bounds each wait the app makes for more body
by ``server.body_timeout_seconds``: on expiry the app's ``receive`` raises
``RequestTimeoutError``, the upload keeps the bytes that arrived (the offset
moves past them, as for a dropped connection) and the client gets a 408 with
``Connection: close``, after which it resumes from ``HEAD``.

The clock runs only while the app waits for bytes the client has not sent:
a slow disk or a busy app pausing the socket never counts against the
client, and neither does waiting for a response. Request heads and idle
connections are ``api.connections``'s.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from artifactstore.errors import RequestTimeoutError

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyTimeoutMiddleware"]


class BodyTimeoutMiddleware:
    """Pure ASGI middleware: each wait for more request body lasts at most ``seconds``."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with a ``receive`` whose body waits end."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:  # waiting for a disconnect, not for the client's bytes
                return await receive()
            try:
                async with asyncio.timeout(self.seconds):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeoutError(
                    f"no request body bytes arrived for {self.seconds:g} s",
                    seconds=self.seconds,
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, timed_receive, send)
