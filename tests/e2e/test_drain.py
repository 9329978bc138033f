"""Stopping a replica drains: /readyz says 503 first, in-flight requests finish, exit 0.

A real ``artifactstore serve`` with ``server.drain_seconds`` set, a PATCH whose
body is still arriving when SIGTERM comes (sent by hand over a socket, so the
test decides when the rest of the body leaves), and a load balancer's view:
``/readyz`` answers 503 ``draining`` while new connections are still served,
then the listener closes, and only then does the PATCH finish - with 204.
A second signal ends a drain early.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import TYPE_CHECKING

import httpx
import pytest

from artifactstore.protocol import OFFSET_HEADER

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.e2e.serverproc import Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEADLINE_SECONDS = 60.0
BODY = os.urandom(256 * 1024)


def readyz(server: Server) -> tuple[int, dict[str, object]] | None:
    """``/readyz`` status and body, or None when nobody accepts the connection."""
    try:
        r = httpx.get(f"{server.url}/readyz", timeout=10)
    except httpx.ConnectError:
        return None
    return r.status_code, r.json()


def refuses_connections(server: Server) -> bool:
    """Whether the API port no longer accepts connections (the listener closed)."""
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_drains_then_an_inflight_patch_still_completes(
    start_server: Callable[..., Server],
) -> None:
    """SIGTERM mid-PATCH: /readyz 503 draining, the listener closes, the PATCH ends 204, exit 0."""
    server = start_server(extra_env={"ARTIFACTSTORE_SERVER_DRAIN_SECONDS": "5"})
    assert server.process is not None
    token = server.env["ARTIFACTSTORE_TOKEN"]
    made = httpx.post(
        f"{server.url}/v1/uploads", json={}, headers={"Authorization": f"Bearer {token}"}
    )
    assert made.status_code == 201, made.text
    head = (
        f"PATCH {made.headers['location']} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {token}\r\n"
        f"{OFFSET_HEADER}: 0\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode()
    half = len(BODY) // 2
    with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE_SECONDS) as patch:
        patch.sendall(head + BODY[:half])
        server.process.send_signal(signal.SIGTERM)

        seen: list[tuple[int, dict[str, object]] | None] = []

        def not_ok() -> bool:
            seen.append(readyz(server))
            return seen[-1] is None or seen[-1][0] != 200

        server.wait_until("/readyz kept saying ok", not_ok)
        assert seen[-1] == (503, {"status": "draining"})  # old code: None (closed at once)
        server.wait_until("the listener never closed", lambda: refuses_connections(server))
        assert server.process.poll() is None  # the PATCH in flight keeps the process up

        patch.sendall(BODY[half:])
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = patch.recv(65536)
            assert chunk, f"connection closed before an answer: {answer!r}"
            answer += chunk
    status_line, _, headers = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 204 No Content", answer
    assert f"{OFFSET_HEADER.lower()}: {len(BODY)}".encode() in headers.lower()
    assert server.process.wait(DEADLINE_SECONDS) == 0


def test_a_second_signal_cuts_the_drain_short(start_server: Callable[..., Server]) -> None:
    """With a drain far longer than the test's deadline, a second SIGTERM still ends it, exit 0."""
    server = start_server(extra_env={"ARTIFACTSTORE_SERVER_DRAIN_SECONDS": "3600"})
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    server.wait_until(
        "/readyz never said draining", lambda: readyz(server) == (503, {"status": "draining"})
    )
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(DEADLINE_SECONDS) == 0


def test_ctrl_c_skips_the_drain(start_server: Callable[..., Server]) -> None:
    """SIGINT (a terminal's Ctrl-C) closes at once, even with an hour of drain configured."""
    server = start_server(extra_env={"ARTIFACTSTORE_SERVER_DRAIN_SECONDS": "3600"})
    assert server.process is not None
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(DEADLINE_SECONDS) == 0
    assert "interrupted: closing the listeners now" in server.log_tail()
