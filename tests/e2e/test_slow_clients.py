"""Slow and numerous clients against the real server, on both listeners (REST API, S3 gateway).

Raw sockets play the clients: some connect and say nothing, some send half a
request head and stall, one stops sending an upload body midway. Limits are
configured small so the server acts within seconds; the tests wait for each
outcome with a generous deadline and never assert on timing.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.e2e.serverproc import Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GENEROUS_SECONDS = 60.0
PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


def _config(tmp_path: Path, **server: int) -> Path:
    path = tmp_path / "artifactstore.toml"
    path.write_text("[server]\n" + "".join(f"{k} = {v}\n" for k, v in server.items()))
    return path


def _connect(port: int, first_bytes: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=GENEROUS_SECONDS)
    if first_bytes:
        sock.sendall(first_bytes)
    return sock


def _read_until_closed(socks: list[socket.socket]) -> dict[socket.socket, bytes]:
    """What each socket received until the server closed it; open ones are left out."""
    got: dict[socket.socket, bytes] = dict.fromkeys(socks, b"")
    open_ = set(socks)
    closed: set[socket.socket] = set()
    deadline = time.monotonic() + GENEROUS_SECONDS
    while open_ and time.monotonic() < deadline:
        readable, _, _ = select.select(list(open_), [], [], 1.0)
        for s in readable:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                data = b""
            if data:
                got[s] += data
            else:
                open_.discard(s)
                closed.add(s)
    return {s: got[s] for s in closed}


def _gateway_ok(server: Server) -> int:
    """A fresh, complete request to the S3 gateway (anonymous ListBuckets on loopback)."""
    return httpx.get(f"{server.s3_url}/", timeout=GENEROUS_SECONDS).status_code


def _api_ok(server: Server) -> int:
    """A fresh, complete request to the REST API."""
    return httpx.get(f"{server.url}/healthz", timeout=GENEROUS_SECONDS).status_code


def _start(
    start_server: Callable[..., Server], tmp_path: Path, listener: str, **server: int
) -> tuple[Server, int, Callable[[Server], int]]:
    """A server with these ``[server]`` limits, the listener's port and its fresh request."""
    running = start_server(config=_config(tmp_path, **server))
    if listener == "api":
        return running, running.port, _api_ok
    return running, running.s3_port, _gateway_ok


def _answers(fresh: Callable[[Server], int], server: Server) -> int | None:
    """``fresh``'s status, or None when the connection broke (refused above the cap)."""
    try:
        return fresh(server)
    except httpx.TransportError:
        return None


@pytest.mark.parametrize("listener", ["api", "gateway"])
def test_stalled_request_heads_are_closed(
    start_server: Callable[..., Server], tmp_path: Path, listener: str
) -> None:
    """Connections that send nothing or half a request head are closed after the header timeout."""
    server, port, fresh = _start(start_server, tmp_path, listener, header_timeout_seconds=1)
    silent = [_connect(port) for _ in range(20)]
    partial = [_connect(port, PARTIAL_HEAD) for _ in range(20)]
    try:
        assert fresh(server) == 200  # a normal client is served meanwhile
        closed = _read_until_closed(silent + partial)
        assert set(closed) == set(silent + partial), f"{len(closed)} of 40 closed"
        assert all(reply == b"" or reply.startswith(b"HTTP/1.1 408 ") for reply in closed.values())
        assert fresh(server) == 200
    finally:
        for s in silent + partial:
            s.close()


@pytest.mark.parametrize("listener", ["api", "gateway"])
def test_an_endless_request_head_is_refused_with_431(
    start_server: Callable[..., Server], tmp_path: Path, listener: str
) -> None:
    """A request head longer than max_header_bytes is answered 431 and closed, not buffered on."""
    server, port, fresh = _start(start_server, tmp_path, listener, max_header_bytes=4096)
    sock = _connect(port, PARTIAL_HEAD)
    try:
        with contextlib.suppress(OSError):  # the server may close while we still send
            for _ in range(64):
                sock.sendall(b"a" * 16384)
        closed = _read_until_closed([sock])
    finally:
        sock.close()
    assert sock in closed, "the server kept reading an endless header"
    assert closed[sock] == b"" or closed[sock].startswith(b"HTTP/1.1 431 "), closed[sock]
    assert fresh(server) == 200


@pytest.mark.parametrize("listener", ["api", "gateway"])
def test_connections_above_the_cap_are_refused_with_503(
    start_server: Callable[..., Server], tmp_path: Path, listener: str
) -> None:
    """Above max_connections new connections get 503 and are closed; freed slots serve again."""
    server, port, fresh = _start(start_server, tmp_path, listener, max_connections=20)
    stalled = [_connect(port, PARTIAL_HEAD) for _ in range(20)]
    extras: list[socket.socket] = []
    try:
        extras = [_connect(port) for _ in range(5)]
        refused = _read_until_closed(extras)
        assert set(refused) == set(extras)
        assert all(reply.startswith(b"HTTP/1.1 503 ") for reply in refused.values()), refused
        for s in stalled:
            s.close()
        deadline = time.monotonic() + GENEROUS_SECONDS
        while _answers(fresh, server) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert fresh(server) == 200
    finally:
        for s in stalled + extras:
            s.close()


def test_a_stalled_upload_body_is_answered_408_and_frees_its_session(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """A PATCH whose body stops midway gets 408 and closes, and frees its session to resume."""
    server = start_server(config=_config(tmp_path, body_timeout_seconds=1))
    auth = {"Authorization": f"Bearer {server.env['ARTIFACTSTORE_TOKEN']}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=GENEROUS_SECONDS) as http:
        made = http.post("/v1/uploads", json={"size": 20})
        assert made.status_code == 201, made.text
        location = made.headers["Location"]
        head = (
            f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {auth['Authorization']}\r\n"
            "Upload-Offset: 0\r\nContent-Length: 20\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        stalled = _connect(server.port, head + b"0123456789")  # 10 of the 20 bytes
        try:
            replies = _read_until_closed([stalled])
        finally:
            stalled.close()
        assert stalled in replies, "the server never closed the stalled upload"
        status_line, _, rest = replies[stalled].partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 408 "), replies[stalled]
        assert json.loads(rest.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"
        # The session is free again (no conflict) and resumes where its bytes end.
        kept = int(http.head(location).headers["Upload-Offset"])
        assert kept <= 10
        rest_of_body = (b"0123456789" + b"abcdefghij")[kept:]
        resumed = http.patch(location, content=rest_of_body, headers={"Upload-Offset": str(kept)})
        assert resumed.status_code == 204, resumed.text
        assert resumed.headers["Upload-Offset"] == "20"


def test_slow_client_limits_leave_normal_traffic_alone(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """Kept-alive connections serve several requests under short limits, on both listeners."""
    server = start_server(config=_config(tmp_path, header_timeout_seconds=1, max_connections=5))
    for base in (server.url, server.s3_url):
        with httpx.Client(base_url=base, timeout=GENEROUS_SECONDS) as http:
            for _ in range(3):
                assert http.get("/healthz" if base == server.url else "/").status_code == 200
                time.sleep(1.5)  # longer than the head deadline, shorter than keep-alive
