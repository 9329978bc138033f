"""The HTTP/1.1 connections both listeners accept: a deadline for request heads, a cap on count.

uvicorn (0.54) times out only idle keep-alive connections between requests:
a client that connects and sends nothing, or trickles a request head and
never finishes it, keeps its socket open for as long as it likes, and
``limit_concurrency`` answers 503 only to a request whose head is complete,
so thousands of such sockets stay open. This module owns the httptools
protocol that ``artifactstore serve`` runs on the REST API and the S3
gateway instead (``guarded_protocol``):

* a request head (request line and headers) must be complete within
  ``server.header_timeout_seconds`` of the connection being made, or of the
  first byte of a following request on a kept-alive connection; otherwise
  the server answers 408 and closes. The deadline is total, not per byte,
  so trickling does not extend it;
* a request head longer than ``server.max_header_bytes`` is answered 431
  and closed (llhttp, under httptools, sets no limit of its own: a client
  could fill memory with one endless header within the deadline);
* above ``server.max_connections`` open connections on a listener, a new
  one is answered 503 at once and closed.

Request bodies that stop arriving are ``api.body_timeout``'s; idle kept-alive
connections are uvicorn's (``timeout_keep_alive``, from
``server.keep_alive_timeout_seconds``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, ClassVar

from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from artifactstore.config import (
    DEFAULT_HEADER_TIMEOUT_SECONDS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER_BYTES,
)

if TYPE_CHECKING:
    import asyncio

    from artifactstore.config import ServerSettings

__all__ = ["GuardedHttpToolsProtocol", "guarded_protocol"]

log = logging.getLogger("artifactstore.serve")

WARN_EVERY_SECONDS = 60.0  # one log line per minute, not one per refused socket


def _canned(status: int, text: str) -> bytes:
    """A complete response that closes the connection (no ASGI app involved)."""
    body = f"{text}\n".encode("ascii")
    head = b"".join(
        [
            STATUS_LINE[status],
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
    )
    return head + body


class _Warner:
    """Logs a recurring condition at most once per ``WARN_EVERY_SECONDS``, with a count."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.count = 0
        self.last = -WARN_EVERY_SECONDS

    def __call__(self) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.last >= WARN_EVERY_SECONDS:
            log.warning("%s (%d since the last report)", self.message, self.count)
            self.last = now
            self.count = 0


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """One connection: closed when its request head is late, refused above the cap.

    The limits are class attributes; ``guarded_protocol`` makes one subclass
    per listener with that listener's values and its own log throttles.
    """

    head_seconds: ClassVar[float] = DEFAULT_HEADER_TIMEOUT_SECONDS
    max_connections: ClassVar[int] = DEFAULT_MAX_CONNECTIONS
    max_header_bytes: ClassVar[int] = DEFAULT_MAX_HEADER_BYTES
    warn_cap: ClassVar[_Warner] = _Warner("connection refused: server.max_connections reached")
    warn_head: ClassVar[_Warner] = _Warner(
        "connection closed: request head too slow (server.header_timeout_seconds)"
    )
    warn_big: ClassVar[_Warner] = _Warner(
        "connection closed: request head too long (server.max_header_bytes)"
    )
    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection; refuse it above the cap, else start the head's clock."""
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self.warn_cap()
            transport.write(_canned(503, "too many connections; try again later"))
            transport.close()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock, then uvicorn's cleanup."""
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse; a head still incomplete after this many bytes is refused."""
        super().data_received(data)
        if self._head_timer is None or self.transport.is_closing():
            return  # no head in progress (a body, or between requests)
        self._head_bytes += len(data)
        if self._head_bytes > self.max_header_bytes:
            self.warn_big()
            self._disarm()
            why = f"request head longer than {self.max_header_bytes} bytes"
            self.transport.write(_canned(431, why))
            self.transport.close()

    def on_message_begin(self) -> None:
        """A request starts: on a kept-alive connection, its head's clock starts now."""
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        """The head is in time: stop the clock and run the request."""
        self._disarm()
        super().on_headers_complete()

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_seconds, self._head_too_slow)

    def _disarm(self) -> None:
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        self.warn_head()
        cycle: RequestResponseCycle | None = self.cycle
        if cycle is None or cycle.response_complete:  # nothing else is being answered
            why = f"request head not complete within {self.head_seconds:g} s"
            self.transport.write(_canned(408, why))
        self.transport.close()


def guarded_protocol(settings: ServerSettings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for one listener (``uvicorn.Config(http=...)``) with ``settings``' limits.

    The cap counts that listener's connections (uvicorn's ``ServerState.connections``).
    """
    cap = settings.max_connections
    attributes = {
        "head_seconds": float(settings.header_timeout_seconds),
        "max_connections": cap,
        "max_header_bytes": settings.max_header_bytes,
        "warn_cap": _Warner(f"connection refused: {cap} open (server.max_connections)"),
        "warn_head": _Warner(GuardedHttpToolsProtocol.warn_head.message),
        "warn_big": _Warner(GuardedHttpToolsProtocol.warn_big.message),
    }
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), attributes)
