"""client/rawhttp.py: file ranges sent (sendfile or TLS), GETs received, against a real HTTP server.

The server is ``http.server.ThreadingHTTPServer`` on loopback; the path picks
its behaviour (see ``_Handler``). It hashes what it reads and records, per
request, the client's port, the bytes it got and the headers. ``_Site`` is a
running server and makes the senders that talk to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import blake3
import pytest

from artifactstore.client.rawhttp import MAX_ANSWER, BulkTransportError, FileSender, RawResponse
from artifactstore.client.sink import BUFFER_BYTES, VerifiedFile
from artifactstore.digests import Digest
from artifactstore.errors import BlobNotFoundError, SizeMismatchError
from artifactstore.protocol import error_from_body

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

MiB = 1024 * 1024
WAIT = 5.0  # a hang guard: far below the senders' socket timeouts in these tests


@dataclass
class _Seen:
    """One request as the server saw it."""

    method: str
    path: str
    port: int
    declared: int
    received: int
    sha256: str
    headers: dict[str, str]


@dataclass
class _State:
    seen: list[_Seen] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)
    """Set by ``/hold`` once it has read the first bytes of a body."""
    release: threading.Event = field(default_factory=threading.Event)
    """``/hold`` reads the rest once this is set."""
    resumed: threading.Event = field(default_factory=threading.Event)
    """Set by ``/hold`` when it reads on (released, or tired of waiting)."""
    finished: threading.Event = field(default_factory=threading.Event)
    """Set when a connection's handler has ended and its socket is closed."""
    blob: bytes = b""
    """What the GET routes serve."""


class _Handler(http.server.BaseHTTPRequestHandler):
    """Reads the body, answers JSON about it. Paths (any query is ignored).

    - ``/echo``: 200, keep-alive.
    - ``/close``: 200 with ``Connection: close``.
    - ``/hangup``: 200 without saying so, then closes (an idle-timeout close).
    - ``/drop-reused``: on a connection's second request, closes without answering.
    - ``/error``: 409 with a JSON error body and ``Upload-Offset``.
    - ``/chunked``: 200, the JSON in a chunked body.
    - ``/early``: 413 before reading any of the body, then closes.
    - ``/hold``: reads 64 KiB, then waits for ``state.release`` before the rest.

    GET serves ``state.blob``:

    - ``/blob``: 200, or 206 for ``Range: bytes=N-``, keep-alive.
    - ``/blob-cut``: as ``/blob``, but closes after half the body.
    - ``/blob-no-range``: 200 with the whole blob, whatever the Range.
    - ``/blob-long``: 200 with one byte more than the blob.
    - ``/blob-bad-range``: 206 whose Content-Range always starts at 0.
    - ``/blob-chunked``: 200, the blob in 1 MiB chunks (``-long``: one byte more).
    - ``/missing``: 404 with a JSON error body.
    """

    protocol_version = "HTTP/1.1"
    state: ClassVar[_State]
    served = 0

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()

    def do_PATCH(self) -> None:
        self._handle()

    do_PUT = do_PATCH  # noqa: N815 - the stdlib's dispatch names
    do_POST = do_PATCH  # noqa: N815

    def do_GET(self) -> None:
        route = self.path.split("?")[0]
        headers = dict(self.headers.items())
        self.state.seen.append(_Seen("GET", self.path, self.client_address[1], 0, 0, "", headers))
        blob = self.state.blob
        if route == "/missing":
            error = {"error": {"code": "blob_not_found", "message": "no such blob", "detail": {}}}
            self._answer(404, error)
            return
        if route.startswith("/blob-chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            data = blob + (b"!" if route == "/blob-chunked-long" else b"")
            for start in range(0, len(data), MiB):
                part = data[start : start + MiB]
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        asked = headers.get("Range", "") if route != "/blob-no-range" else ""
        start = int(asked.removeprefix("bytes=").removesuffix("-")) if asked else 0
        body = blob[start:] + (b"!" if route == "/blob-long" else b"")
        self.send_response(206 if asked else 200)
        self.send_header("Content-Length", str(len(body)))
        if asked:
            first = 0 if route == "/blob-bad-range" else start
            self.send_header("Content-Range", f"bytes {first}-{len(blob) - 1}/{len(blob)}")
        self.end_headers()
        if route == "/blob-cut":
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def _read_body(self, declared: int, *, hold: bool = False) -> tuple[int, str]:
        digest, received = hashlib.sha256(), 0
        while received < declared:
            if hold and received >= 64 * 1024 and not self.state.started.is_set():
                self.state.started.set()
                self.state.release.wait(WAIT)
                self.state.resumed.set()
            try:
                block = self.rfile.read1(min(MiB, declared - received))
            except OSError:
                block = b""
            if not block:
                break
            digest.update(block)
            received += len(block)
        return received, digest.hexdigest()

    def _handle(self) -> None:
        route = self.path.split("?")[0]
        declared = int(self.headers.get("Content-Length", "0"))
        self.served += 1
        if route == "/drop-reused" and self.served > 1:
            self.close_connection = True
            return
        if route == "/early":
            self._answer(413, {"error": {"code": "too_large"}}, close=True)
            return
        received, sha = self._read_body(declared, hold=route == "/hold")
        self.state.seen.append(
            _Seen(
                self.command,
                self.path,
                self.client_address[1],
                declared,
                received,
                sha,
                dict(self.headers.items()),
            )
        )
        if received < declared:
            self.close_connection = True
            return
        data = {"sha256": sha, "received": received, "path": self.path}
        if route == "/error":
            self._answer(409, {"error": {"code": "offset_mismatch"}}, extra={"Upload-Offset": "7"})
        elif route == "/chunked":
            self._chunked(json.dumps(data).encode())
        else:
            self._answer(200, data, close=route == "/close")
            if route == "/hangup":
                self.close_connection = True

    def _answer(
        self,
        status: int,
        data: object,
        *,
        close: bool = False,
        extra: dict[str, str] | None = None,
    ) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _chunked(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        half = len(body) // 2
        for part in (body[:half], body[half:], b""):
            self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    state: _State

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        # Only now is the connection closed: a client checking its pooled
        # socket after ``finished`` sees the close.
        self.state.finished.set()


class _V6Server(_Server):
    address_family = socket.AF_INET6


@dataclass
class _Site:
    """A running test server: its base URL and port, what it saw, a client TLS context for it."""

    url: str
    port: int
    state: _State
    tls: ssl.SSLContext | None

    def sender(
        self, prefix: str = "", headers: Mapping[str, str] | None = None, **options: Any
    ) -> FileSender:
        return FileSender(self.url + prefix, headers or {}, ssl_context=self.tls, **options)


@contextlib.contextmanager
def _serve(
    host: str = "127.0.0.1", tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None
) -> Iterator[_Site]:
    """The server on ``host``; over TLS with ``tls`` (the server's and the client's context)."""
    state = _State()
    handler = type("Handler", (_Handler,), {"state": state})
    server = (_V6Server if ":" in host else _Server)((host, 0), handler)
    server.state = state
    if tls is not None:
        server.socket = tls[0].wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    scheme = "http" if tls is None else "https"
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield _Site(f"{scheme}://{netloc}", port, state, None if tls is None else tls[1])
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def site() -> Iterator[_Site]:
    with _serve() as running:
        yield running


@pytest.fixture(params=["http", "https"])
def any_site(
    request: pytest.FixtureRequest, tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]
) -> Iterator[_Site]:
    """The server over plain HTTP (sendfile) and over TLS (read and send)."""
    with _serve(tls=tls_pair if request.param == "https" else None) as running:
        yield running


@pytest.fixture
def sender(site: _Site) -> Iterator[FileSender]:
    """A sender to ``site`` with the default settings."""
    with closing(site.sender()) as made:
        yield made


@pytest.fixture
def data() -> bytes:
    return os.urandom(3 * MiB + 12345)


@pytest.fixture
def data_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    return path


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    """64 MiB of zeros (sparse): far more than the socket buffers hold."""
    path = tmp_path / "big.bin"
    with path.open("wb") as fh:
        fh.truncate(64 * MiB)
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json(answer: RawResponse) -> Any:
    return json.loads(answer.body)


# --- bytes on the wire ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "length"),
    [(0, 3 * MiB + 12345), (12345, 1_000_000), (3 * MiB, 12345), (777, 0), (3 * MiB + 12345, 0)],
)
async def test_sends_exactly_the_range(
    site: _Site, data_file: Path, data: bytes, offset: int, length: int
) -> None:
    """The server receives exactly the bytes of the range, with Content-Length set from it."""
    with closing(site.sender(headers={"User-Agent": "test"})) as sender:
        answer = await sender.send_range("PATCH", "/echo", data_file, offset, length)
    assert answer.status == 200
    assert _json(answer)["sha256"] == _sha(data[offset : offset + length])
    (seen,) = site.state.seen
    assert (seen.method, seen.declared, seen.received) == ("PATCH", length, length)
    assert seen.headers["User-Agent"] == "test"
    assert seen.headers["Connection"] == "keep-alive"


async def test_progress_reports_each_piece_on_the_loop(
    site: _Site, data_file: Path, data: bytes
) -> None:
    """Progress comes per piece, on the event loop thread, and sums to the length."""
    calls: list[tuple[int, int]] = []
    with closing(site.sender(piece_size=MiB)) as sender:
        answer = await sender.send_range(
            "PATCH",
            "/echo",
            data_file,
            5,
            len(data) - 5,
            on_progress=lambda n: calls.append((n, threading.get_ident())),
        )
    assert _json(answer)["sha256"] == _sha(data[5:])
    assert [n for n, _ in calls] == [MiB, MiB, MiB, len(data) - 5 - 3 * MiB]
    assert {ident for _, ident in calls} == {threading.get_ident()}


@pytest.mark.parametrize(
    ("path", "params", "target"),
    [
        ("/echo", {"q": "a b&c", "n": "1"}, "/api/echo?q=a+b%26c&n=1"),
        ("/echo?a=1", {"n": "1"}, "/api/echo?a=1&n=1"),
        ("/echo?a=1", None, "/api/echo?a=1"),
    ],
)
async def test_head_carries_prefix_params_and_headers(
    site: _Site, data_file: Path, path: str, params: dict[str, str] | None, target: str
) -> None:
    """The base URL's prefix, params (after any query in the path) and both header sets arrive."""
    with closing(site.sender("/api/", {"Authorization": "Bearer x", "X-A": "1"})) as sender:
        await sender.send_range(
            "PUT",
            path,
            data_file,
            0,
            10,
            headers={"X-B": "2", "Content-Length": "10"},
            params=params,
        )
    (seen,) = site.state.seen
    assert seen.path == target
    assert seen.headers["Authorization"] == "Bearer x"
    assert (seen.headers["X-A"], seen.headers["X-B"]) == ("1", "2")
    assert seen.headers["Host"] == f"127.0.0.1:{site.port}"


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://h:80/p", "h"),
        ("https://h:443", "h"),
        ("http://[::1]/p", "[::1]"),
        ("http://h:8080", "h:8080"),
        ("https://h:80", "h:80"),
    ],
)
def test_host_header_names_only_a_non_default_port(url: str, host: str) -> None:
    """The Host header carries the port only when it is not the scheme's default."""
    head, _ = FileSender(url, {})._head("PATCH", "/x", 0, None, None)
    assert f"\r\nHost: {host}\r\n".encode() in head


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("PATCH", "/x", {"X-Bad": "a\r\nInjected: 1"}),
        ("PATCH", "/x", {"X-Bad": "a\nb"}),
        ("PATCH", "/x", {"X-Bad": "a\0b"}),
        ("PATCH", "/x", {"Bad\r\nName": "a"}),
        ("PATCH", "/x", {"Bad Name": "a"}),
        ("PATCH", "/x", {"Transfer-Encoding": "chunked"}),
        ("PATCH", "/x", {"Host": "elsewhere"}),
        ("PATCH", "/x", {"Content-Length": "11"}),
        ("PATCH", "/x", {"X-Text": "\u20ac"}),
        ("PATCH", "/x y", {}),
        ("PATCH", "x", {}),
        ("PATCH", "/x\r\n", {}),
        ("PAT CH", "/x", {}),
    ],
)
async def test_invalid_heads_are_refused(
    data_file: Path, method: str, path: str, headers: dict[str, str]
) -> None:
    """CR, LF or NUL in a header, a bad name, framing headers, bad paths: ValueError, no I/O."""
    sender = FileSender("http://127.0.0.1:9", {})
    with pytest.raises(ValueError):
        await sender.send_range(method, path, data_file, 0, 10, headers=headers)


@pytest.mark.parametrize(("offset", "length"), [(-1, 10), (0, -1)])
async def test_negative_ranges_are_refused(data_file: Path, offset: int, length: int) -> None:
    """A negative offset or length: ValueError before any I/O."""
    sender = FileSender("http://127.0.0.1:9", {})
    with pytest.raises(ValueError, match="invalid range"):
        await sender.send_range("PATCH", "/x", data_file, offset, length)


@pytest.mark.parametrize(
    ("url", "headers", "piece_size"),
    [
        ("ftp://h/", {}, MiB),
        ("http:///x", {}, MiB),
        ("http://h/?q=1", {}, MiB),
        ("http://h/#f", {}, MiB),
        ("http://u@h/", {}, MiB),
        ("h:80", {}, MiB),
        ("http://127.0.0.1:9", {"X": "a\r\nb"}, MiB),
        ("http://127.0.0.1:9", {}, 0),
    ],
)
def test_invalid_senders_are_refused(url: str, headers: dict[str, str], piece_size: int) -> None:
    """A base URL not http(s)://host[:port][/prefix], a bad header or piece size: ValueError."""
    with pytest.raises(ValueError):
        FileSender(url, headers, piece_size=piece_size)


# --- connections ------------------------------------------------------------------------


async def test_keep_alive_connection_is_reused(
    sender: FileSender, site: _Site, data_file: Path
) -> None:
    """Requests in a row travel on one connection (the server sees one client port)."""
    for _ in range(3):
        await sender.send_range("PATCH", "/echo", data_file, 0, 1000)
    assert len({seen.port for seen in site.state.seen}) == 1


async def test_connection_close_and_max_idle_zero_are_not_reused(
    site: _Site, data_file: Path
) -> None:
    """``Connection: close`` answers and a zero-sized pool mean one connection per request."""
    with closing(site.sender()) as sender, closing(site.sender(max_idle=0)) as unpooled:
        for each, route in [(sender, "/close"), (sender, "/echo")] + [(unpooled, "/echo")] * 2:
            await each.send_range("PATCH", route, data_file, 0, 10)
    assert len({seen.port for seen in site.state.seen}) == 4


async def test_idle_connection_closed_by_the_server_is_replaced(
    sender: FileSender, site: _Site, data_file: Path, data: bytes
) -> None:
    """A pooled connection the server closed meanwhile is dropped; the next request succeeds."""
    await sender.send_range("PATCH", "/hangup", data_file, 0, 10)
    assert site.state.finished.wait(WAIT)
    answer = await sender.send_range("PATCH", "/echo", data_file, 0, len(data))
    assert _json(answer)["sha256"] == _sha(data)
    assert site.state.seen[0].port != site.state.seen[1].port


async def test_reused_connection_dropped_before_answering_is_retried_once(
    sender: FileSender, site: _Site, data_file: Path
) -> None:
    """A kept-alive connection closed on the request itself, no body sent: re-sent on a new one."""
    await sender.send_range("POST", "/drop-reused", data_file, 0, 0)
    answer = await sender.send_range("POST", "/drop-reused", data_file, 0, 0)
    assert answer.status == 200
    assert len(site.state.seen) == 2
    assert site.state.seen[0].port != site.state.seen[1].port


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"", "closed the connection without answering"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "in the middle of its answer"),
        (b"SMTP ready\r\n", "BadStatusLine"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
            % (MAX_ANSWER + 1, b"x" * (MAX_ANSWER + 1)),
            f"answer longer than {MAX_ANSWER} bytes",
        ),
    ],
    ids=["none", "cut", "junk", "overlong"],
)
async def test_broken_answers_on_a_fresh_connection_are_transport_errors(
    data_file: Path, answer: bytes, message: str
) -> None:
    """No, a cut, junk or an overlong answer on a new connection: BulkTransportError, no retry."""
    accepted: list[bytes] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(0.3)

        def reply_and_hang_up() -> None:
            with contextlib.suppress(TimeoutError):
                for _ in range(2):
                    conn, _ = listener.accept()
                    with conn, contextlib.suppress(ConnectionError):  # the client may stop reading
                        accepted.append(conn.recv(65536))
                        conn.sendall(answer)

        thread = threading.Thread(target=reply_and_hang_up)
        thread.start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with (
            closing(FileSender(url, {})) as sender,
            pytest.raises(BulkTransportError, match=message),
        ):
            await sender.send_range("PATCH", "/x", data_file, 0, 0)
        thread.join()
    assert len(accepted) == 1
    assert accepted[0].startswith(b"PATCH /x HTTP/1.1\r\n")


async def test_a_stalled_server_times_out(site: _Site, big_file: Path) -> None:
    """A server that stops reading: BulkTransportError after ``timeout``, not a hang."""
    sender = site.sender(timeout=0.3)
    with pytest.raises(BulkTransportError, match="timed out"):
        await asyncio.wait_for(sender.send_range("PATCH", "/hold", big_file, 0, 64 * MiB), WAIT)
    assert site.state.started.is_set()
    assert sender._idle == []


async def test_connection_refused_is_a_transport_error(data_file: Path) -> None:
    """Nothing listening: BulkTransportError naming the URL, not a bare OSError."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sender = FileSender(f"http://127.0.0.1:{port}", {})
    with pytest.raises(BulkTransportError, match=rf"PATCH http://127.0.0.1:{port}/x: .*refused"):
        await sender.send_range("PATCH", "/x", data_file, 0, 10)


async def test_concurrent_sends_share_the_pool(site: _Site, data_file: Path, data: bytes) -> None:
    """Concurrent sends arrive whole; the pool keeps at most ``max_idle``; close() closes those."""
    ranges = [(i * 100_000, 700_000 + i) for i in range(6)]
    with closing(site.sender(max_idle=2)) as sender:
        answers = await asyncio.gather(
            *(sender.send_range("PATCH", "/echo", data_file, o, n) for o, n in ranges)
        )
        idle = list(sender._idle)
        assert 0 < len(idle) <= 2
    assert [_json(a)["sha256"] for a in answers] == [_sha(data[o : o + n]) for o, n in ranges]
    assert len(site.state.seen) == 6
    assert sender._idle == []
    assert [sock.fileno() for sock in idle] == [-1] * len(idle)


# --- answers ------------------------------------------------------------------------------


async def test_error_status_is_returned_not_raised(
    sender: FileSender, site: _Site, data_file: Path
) -> None:
    """A 409 with a JSON body comes back as a RawResponse; the connection stays usable."""
    answer = await sender.send_range("PATCH", "/error", data_file, 0, 100)
    again = await sender.send_range("PATCH", "/echo", data_file, 0, 100)
    assert answer.status == 409
    assert _json(answer) == {"error": {"code": "offset_mismatch"}}
    assert ("Upload-Offset", "7") in answer.headers
    assert again.status == 200
    assert site.state.seen[0].port == site.state.seen[1].port


async def test_chunked_answer_is_parsed(
    sender: FileSender, site: _Site, data_file: Path, data: bytes
) -> None:
    """A chunked answer body is joined; the connection is reused after it."""
    answer = await sender.send_range("PATCH", "/chunked", data_file, 0, 4096)
    await sender.send_range("PATCH", "/echo", data_file, 0, 1)
    assert answer.status == 200
    assert ("Transfer-Encoding", "chunked") in answer.headers
    assert _json(answer)["sha256"] == _sha(data[:4096])
    assert site.state.seen[0].port == site.state.seen[1].port


async def test_early_answer_beats_the_broken_send(any_site: _Site, big_file: Path) -> None:
    """A server answering 413 before reading the body and closing: the 413 is returned."""
    with closing(any_site.sender()) as sender:
        answer = await sender.send_range("PUT", "/early", big_file, 0, 64 * MiB)
        assert sender._idle == []
    assert answer.status == 413
    assert _json(answer) == {"error": {"code": "too_large"}}


# --- the file changing, cancellation ------------------------------------------------------


async def test_file_already_too_short_sends_nothing(
    sender: FileSender, site: _Site, data_file: Path, data: bytes
) -> None:
    """A range past the end: SizeMismatchError naming the file, before any request."""
    with pytest.raises(SizeMismatchError, match=str(data_file)) as caught:
        await sender.send_range("PATCH", "/echo", data_file, 10, len(data))
    assert caught.value.detail["expected"] == len(data) + 10
    assert site.state.seen == []


async def test_file_shrinking_mid_send_truncates_the_body(any_site: _Site, big_file: Path) -> None:
    """The file shrinks while it is sent: SizeMismatchError, and the server sees a short body."""
    state = any_site.state
    with closing(any_site.sender(piece_size=MiB)) as sender:
        task = asyncio.create_task(sender.send_range("PATCH", "/hold", big_file, 0, 64 * MiB))
        assert await asyncio.to_thread(state.started.wait, WAIT)
        os.truncate(big_file, 0)
        state.release.set()
        with pytest.raises(SizeMismatchError, match=r"big\.bin"):
            await asyncio.wait_for(task, WAIT)
        assert await asyncio.to_thread(state.finished.wait, WAIT)
        assert sender._idle == []
    (seen,) = state.seen
    assert 0 < seen.received < seen.declared == 64 * MiB


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_cancellation_stops_the_worker_promptly(
    scheme: str, big_file: Path, tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """Cancelled mid-body: the send ends while the server still holds off; the socket is dropped."""
    with _serve(tls=tls_pair if scheme == "https" else None) as site:
        sender = site.sender()
        threads = threading.active_count()
        task = asyncio.create_task(sender.send_range("PATCH", "/hold", big_file, 0, 64 * MiB))
        assert await asyncio.to_thread(site.state.started.wait, WAIT)
        await asyncio.sleep(0.05)  # the worker is blocked on a full socket buffer
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), WAIT)
        elapsed = time.monotonic() - started
        assert not site.state.resumed.is_set()  # not unblocked by the server reading on
        assert sender._idle == []
        site.state.release.set()
        assert await asyncio.to_thread(site.state.finished.wait, WAIT)  # the server saw it end
        sender.close()
    assert elapsed < WAIT
    assert threading.active_count() <= threads + 1  # the executor thread is idle, not stuck
    (seen,) = site.state.seen
    assert seen.received < seen.declared


async def test_closed_sender_refuses_new_requests(data_file: Path) -> None:
    """After close(), send_range raises RuntimeError."""
    sender = FileSender("http://127.0.0.1:9", {})
    sender.close()
    with pytest.raises(RuntimeError, match="closed"):
        await sender.send_range("PATCH", "/x", data_file, 0, 1)


# --- TLS and IPv6 -------------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, and its key (PEM files)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        import datetime as dt  # noqa: PLC0415 - only when cryptography is present

        from cryptography import x509  # noqa: PLC0415
        from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
        from cryptography.x509.oid import NameOID  # noqa: PLC0415
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("neither cryptography nor openssl is available to make a certificate")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", str(key), "-out", str(cert)],
            check=True,
            capture_output=True,
        )  # fmt: skip
        return cert, key
    import ipaddress  # noqa: PLC0415

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh self-signed certificate and a client context trusting it."""
    cert, key = _self_signed(tmp_path_factory.mktemp("tls"))
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    return server_side, ssl.create_default_context(cafile=str(cert))


async def test_https_sends_the_range_and_reuses_the_connection(
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext], data_file: Path, data: bytes
) -> None:
    """Over TLS the range arrives whole (read-and-send path) and the connection is kept."""
    calls: list[int] = []
    with _serve(tls=tls_pair) as site, closing(site.sender(piece_size=MiB)) as sender:
        first = await sender.send_range(
            "PATCH", "/echo", data_file, 3, len(data) - 3, on_progress=calls.append
        )
        second = await sender.send_range("PATCH", "/chunked", data_file, 0, 0)
    assert _json(first)["sha256"] == _sha(data[3:])
    assert _json(second)["sha256"] == _sha(b"")
    assert sum(calls) == len(data) - 3
    assert len(calls) == 4
    assert site.state.seen[0].port == site.state.seen[1].port


async def test_https_with_an_untrusted_certificate_fails_clearly(
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext], data_file: Path
) -> None:
    """The default context does not trust a self-signed certificate: BulkTransportError."""
    with _serve(tls=tls_pair) as site:
        sender = FileSender(site.url, {})
        with pytest.raises(BulkTransportError, match="CERTIFICATE_VERIFY_FAILED"):
            await sender.send_range("PATCH", "/echo", data_file, 0, 10)
    assert site.state.seen == []


async def test_ipv6_literal_base_url(data_file: Path) -> None:
    """``http://[::1]:port/prefix`` connects over IPv6 and sends a bracketed Host."""
    with contextlib.ExitStack() as stack:
        try:
            site = stack.enter_context(_serve("::1"))
        except OSError:
            pytest.skip("no IPv6 loopback here")
        with closing(site.sender("/p")) as sender:
            answer = await sender.send_range("PATCH", "/echo", data_file, 0, 100)
    assert _json(answer)["path"] == "/p/echo"
    assert site.state.seen[0].headers["Host"] == f"[::1]:{site.port}"


# --- GET into a VerifiedFile ------------------------------------------------------------


@pytest.fixture(scope="module")
def blob() -> bytes:
    """More than two of the sink's buffers, ending mid-block."""
    return os.urandom(2 * BUFFER_BYTES + MiB + 12345)


def _sink(target: Path, blob: bytes) -> VerifiedFile:
    return VerifiedFile(
        target,
        size=len(blob),
        sha256=Digest("sha256", hashlib.sha256(blob).digest()),
        blake3=Digest("blake3", blake3.blake3(blob).digest()),
    )


async def test_get_into_receives_the_whole_body(
    any_site: _Site, tmp_path: Path, blob: bytes
) -> None:
    """A 200 body lands in the sink whole, progress sums to it; the connection stays."""
    any_site.state.blob = blob
    target = tmp_path / "out.bin"
    calls: list[tuple[int, int]] = []
    with closing(any_site.sender()) as sender, _sink(target, blob) as sink:
        answer = await sender.get_into(
            "/blob", sink, on_progress=lambda n: calls.append((n, threading.get_ident()))
        )
        assert (answer.status, answer.body) == (200, b"")
        assert ("Content-Length", str(len(blob))) in answer.headers
        assert sink.written == len(blob)
        sink.commit()
        await sender.send_range("PATCH", "/echo", target, 0, 10)
    assert target.read_bytes() == blob
    assert sum(n for n, _ in calls) == len(blob)
    assert {ident for _, ident in calls} == {threading.get_ident()}
    assert "Range" not in any_site.state.seen[0].headers
    assert any_site.state.seen[0].port == any_site.state.seen[1].port


async def test_get_into_a_body_cut_short_resumes_with_range(
    any_site: _Site, tmp_path: Path, blob: bytes
) -> None:
    """Closed mid-body: BulkTransportError, what came is kept; the retry asks for the rest."""
    any_site.state.blob = blob
    target = tmp_path / "out.bin"
    with closing(any_site.sender()) as sender, _sink(target, blob) as sink:
        with pytest.raises(BulkTransportError, match="ended"):
            await sender.get_into("/blob-cut", sink)
        assert sink.written == len(blob) // 2
        assert sender._idle == []
        answer = await sender.get_into("/blob", sink)
        sink.commit()
    assert answer.status == 206
    assert any_site.state.seen[1].headers["Range"] == f"bytes={len(blob) // 2}-"
    assert target.read_bytes() == blob


async def test_get_into_restarts_when_the_range_is_ignored(
    site: _Site, tmp_path: Path, blob: bytes
) -> None:
    """A 200 to a Range request: the sink starts over, progress is wound back, the file is right."""
    site.state.blob = blob
    target = tmp_path / "out.bin"
    calls: list[int] = []
    with closing(site.sender()) as sender, _sink(target, blob) as sink:
        with pytest.raises(BulkTransportError):
            await sender.get_into("/blob-cut", sink, on_progress=calls.append)
        answer = await sender.get_into("/blob-no-range", sink, on_progress=calls.append)
        sink.commit()
    assert answer.status == 200
    assert -(len(blob) // 2) in calls
    assert sum(calls) == len(blob)
    assert target.read_bytes() == blob


async def test_get_into_returns_an_error_answer_intact(
    site: _Site, tmp_path: Path, blob: bytes
) -> None:
    """A 404 with a JSON body comes back whole (error_from_body maps it); the sink is untouched."""
    with closing(site.sender()) as sender, _sink(tmp_path / "out.bin", blob) as sink:
        answer = await sender.get_into("/missing", sink)
        assert sink.written == 0
        await sender.get_into("/missing", sink)
    assert answer.status == 404
    assert json.loads(answer.body)["error"]["code"] == "blob_not_found"
    assert isinstance(error_from_body(answer.status, json.loads(answer.body)), BlobNotFoundError)
    assert site.state.seen[0].port == site.state.seen[1].port


@pytest.mark.parametrize(
    ("route", "message"),
    [("/blob-long", "Content-Length"), ("/blob-bad-range", "Content-Range bytes 0-")],
)
async def test_get_into_refuses_a_body_that_does_not_fit(
    site: _Site, tmp_path: Path, blob: bytes, route: str, message: str
) -> None:
    """A longer body or a 206 from the wrong offset: SizeMismatchError before a byte is taken."""
    site.state.blob = blob
    with closing(site.sender()) as sender, _sink(tmp_path / "out.bin", blob) as sink:
        if route == "/blob-bad-range":
            with pytest.raises(BulkTransportError):
                await sender.get_into("/blob-cut", sink)
        before = sink.written
        with pytest.raises(SizeMismatchError, match=message):
            await sender.get_into(route, sink)
        assert sink.written == before
        assert sender._idle == []


async def test_get_into_takes_a_chunked_body(site: _Site, tmp_path: Path, blob: bytes) -> None:
    """A chunked 200 (as a proxy may send) is unframed into the sink."""
    site.state.blob = blob
    target = tmp_path / "out.bin"
    with closing(site.sender()) as sender, _sink(target, blob) as sink:
        answer = await sender.get_into("/blob-chunked", sink)
        sink.commit()
    assert answer.status == 200
    assert target.read_bytes() == blob


async def test_get_into_refuses_a_chunked_body_running_long(
    site: _Site, tmp_path: Path, blob: bytes
) -> None:
    """A chunked body with a byte past the blob: SizeMismatchError, the file is not committed."""
    site.state.blob = blob
    with closing(site.sender()) as sender, _sink(tmp_path / "out.bin", blob) as sink:
        with pytest.raises(SizeMismatchError, match="longer"):
            await sender.get_into("/blob-chunked-long", sink)
        assert sender._idle == []
    assert not await asyncio.to_thread(lambda: list(tmp_path.iterdir()))


async def test_get_into_refuses_a_range_other_than_the_sinks(tmp_path: Path, blob: bytes) -> None:
    """A Range header that is not ``bytes=<written>-``: ValueError, no I/O."""
    sender = FileSender("http://127.0.0.1:9", {})
    with _sink(tmp_path / "out.bin", blob) as sink, pytest.raises(ValueError, match="Range"):
        await sender.get_into("/blob", sink, headers={"Range": "bytes=5-"})
