"""What ``client.transport.Transport`` learns from answers, and how it says it gave up retrying.

Against a real ``http.server`` on loopback that answers every request with
a fixed status and an ``Artifactstore-Deployment`` header, as a replica
behind a balancer would (or, with 502, the balancer with none left).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import threading
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from artifactstore import errors
from artifactstore.client.endpoint import Endpoint
from artifactstore.client.transport import Transport
from artifactstore.protocol import DEPLOYMENT_HEADER

if TYPE_CHECKING:
    from collections.abc import Iterator


class _Handler(http.server.BaseHTTPRequestHandler):
    status: ClassVar[int] = 200
    body: ClassVar[bytes] = b"{}"

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header(DEPLOYMENT_HEADER, "dep-1")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_args: Any) -> None:
        """Quiet."""


@contextlib.contextmanager
def _serving(status: int, body: bytes) -> Iterator[str]:
    handler = type("Handler", (_Handler,), {"status": status, "body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_deployment_a_server_names_is_learned() -> None:
    """Any answer's ``Artifactstore-Deployment`` header becomes ``Transport.deployment``."""

    async def ask(url: str) -> str | None:
        async with Transport(Endpoint(url, None, trust_env=False)) as http:
            assert http.deployment is None
            await http.request("GET", "/v1/anything")
            return http.deployment

    with _serving(200, b"{}") as url:
        assert asyncio.run(ask(url)) == "dep-1"


def test_retries_that_run_out_say_so() -> None:
    """A balancer answering 502 until the budget is spent: the error counts the attempts."""

    async def ask(url: str) -> None:
        async with Transport(Endpoint(url, None, retry_seconds=1.0, trust_env=False)) as http:
            await http.retrying("ask", lambda _attempt: http.request("GET", "/v1/x"))

    with (
        _serving(502, b"<html>Bad Gateway</html>") as url,
        pytest.raises(errors.UnavailableError) as caught,
    ):
        asyncio.run(ask(url))
    assert "gave up after" in caught.value.message
    assert caught.value.detail["attempts"] >= 2
    assert caught.value.detail["http_status"] == 502
