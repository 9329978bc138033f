"""Zero-copy HTTP/1.1 uploads of a byte range of a local file (``os.sendfile``).

Why: streaming a PATCH body through httpx reads every block into Python
``bytes``, copies it on its way to the socket and costs event-loop work per
block; on a 2-core machine shared with the server that CPU is the bottleneck
of a large upload. Here the kernel moves the bytes from the page cache into
the socket (``sendfile(2)``), so the client spends almost nothing per byte.

Owns: building the request head by hand (RFC 9112: request line, ``Host``,
``Content-Length``, ``Connection: keep-alive``, then the caller's headers),
sending the file range, parsing the answer with the stdlib's
``http.client.HTTPResponse`` (Content-Length, chunked, read-until-close), and
a small pool of idle keep-alive connections. Sockets are blocking (with
timeouts) and driven from worker threads, so the event loop never waits on
bulk I/O. Over TLS ``sendfile`` is impossible (the bytes must be encrypted
in user space): the range is read into one reused buffer and sent with
``sendall`` (``socket.sendfile``'s own fallback for ``SSLSocket`` reads 8 KiB
``bytes`` objects, far more CPU per byte).

It does not: map statuses to ``artifactstore.errors`` (callers get a
``RawResponse``, error statuses included), retry beyond one re-send on a
stale idle connection, follow redirects, or send anything but a file range.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import select
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

from artifactstore import errors

if TYPE_CHECKING:
    import io
    from collections.abc import Callable, Mapping
    from pathlib import Path

__all__ = ["BulkTransportError", "FileSender", "RawResponse"]

PIECE_SIZE = 8 * 1024 * 1024
"""Bytes per ``sendfile`` round between progress reports (and checks for cancellation)."""
TLS_BUFFER = 1024 * 1024
"""Bytes read and encrypted at once over TLS (one buffer per request, reused)."""
MAX_ANSWER = 16 * 1024 * 1024
"""Longest answer body accepted; answers here are a 204 or a JSON error."""

_OWN_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding"})
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class RawResponse:
    """The server's answer, whatever its status."""

    status: int
    headers: list[tuple[str, str]]
    """As received, in order (names keep their case)."""
    body: bytes


class BulkTransportError(Exception):
    """Connecting, sending or reading the answer failed (the request may or may not have arrived).

    With ``sendfile`` a read error of the local file itself is indistinguishable
    from a socket error and is reported here too.
    """


class _CancelledError(Exception):
    """The awaiting task was cancelled; the worker stops (internal)."""


class _Call:
    """One ``send_range`` call's socket, shared with the cancelling side.

    Cancellation shuts the socket down (never closes it: the worker thread
    still uses the descriptor), which makes the worker's blocking send, recv
    or connect fail at once; the worker then closes it.
    """

    def __init__(self, report: Callable[[int], None] | None) -> None:
        self.report = report
        """Called from the worker with each piece's byte count."""
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.cancelled = False

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            if self.cancelled:
                raise _CancelledError
            self._sock = sock

    def detach(self) -> bool:
        """Forget the socket; False when the call was cancelled (the socket must be closed)."""
        with self._lock:
            self._sock = None
            return not self.cancelled

    def abort(self) -> None:
        with self._lock:
            self.cancelled = True
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    # The plain method: SSLSocket.shutdown drops its SSL object,
                    # which the worker thread may be using.
                    socket.socket.shutdown(self._sock, socket.SHUT_RDWR)


class _ResendableError(Exception):
    """A reused connection failed before any of the body went out (internal): send again."""


def _check_token(kind: str, text: str) -> None:
    if not text or not set(text) <= _TCHAR:
        raise ValueError(f"invalid HTTP {kind} {text!r}")


def _check_value(name: str, value: str) -> None:
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"header {name!r}: the value contains CR, LF or NUL")


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


def _readable(sock: socket.socket) -> bool:
    """True when ``sock`` has something to read now (data, EOF or an error).

    For an idle connection that means the server closed it (or sent junk).
    """
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(exc, http.client.IncompleteRead):
        return "the server closed the connection in the middle of its answer"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, OSError) else f"{type(exc).__name__}: {text}"


class FileSender:
    """Sends requests whose body is a range of a local file.

    Blocking sockets driven from worker threads (``asyncio`` default
    executor, as ``asyncio.to_thread``); one thread per request in flight.
    Idle keep-alive connections are reused (at most ``max_idle``; the pool is
    shared by concurrent calls and guarded by a lock). ``close()`` closes the
    idle ones; connections in use close when their request ends.
    """

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        max_idle: int = 8,
        ssl_context: ssl.SSLContext | None = None,
        piece_size: int = PIECE_SIZE,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in _DEFAULT_PORTS or not url.hostname:
            raise ValueError(f"base URL {base_url!r} must look like http(s)://host[:port][/prefix]")
        if url.query or url.fragment or url.username is not None:
            raise ValueError(f"base URL {base_url!r} must not carry a query, fragment or user")
        if piece_size <= 0:
            raise ValueError("piece_size must be positive")
        self._host = url.hostname
        self._port = url.port or _DEFAULT_PORTS[url.scheme]
        self._origin = f"{url.scheme}://{url.netloc}"
        self._prefix = url.path.rstrip("/")
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._host_header = host if url.port in {None, _DEFAULT_PORTS[url.scheme]} else url.netloc
        self._tls: ssl.SSLContext | None = None
        if url.scheme == "https":
            self._tls = ssl_context or ssl.create_default_context()
        self._headers = self._checked(headers)
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._max_idle = max_idle
        self._piece = piece_size
        self._lock = threading.Lock()
        self._idle: list[socket.socket] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"FileSender({self._origin}{self._prefix!r}, idle={len(self._idle)})"

    @staticmethod
    def _checked(headers: Mapping[str, str]) -> list[tuple[str, str]]:
        result = []
        for name, value in headers.items():
            _check_token("header name", name)
            _check_value(name, value)
            if name.lower() in _OWN_HEADERS:
                raise ValueError(f"header {name!r} is set by FileSender itself")
            result.append((name, value))
        return result

    def _head(
        self,
        method: str,
        path: str,
        length: int,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
    ) -> tuple[bytes, str]:
        """The encoded request line and header block, and the target; ValueError when invalid."""
        _check_token("method", method)
        if not path.startswith("/") or any(c <= " " or c >= "\x7f" for c in path):
            raise ValueError(f"path {path!r} must start with / and be percent-encoded ASCII")
        target = self._prefix + path
        if params:
            target += ("&" if "?" in path else "?") + urlencode(params)
        extra = dict(headers or {})
        # Callers used to setting Content-Length themselves may repeat the right one.
        for name in [n for n in extra if n.lower() == "content-length"]:
            if extra.pop(name) != str(length):
                raise ValueError(f"Content-Length {length} is set from the range")
        lines = [
            f"{method} {target} HTTP/1.1",
            f"Host: {self._host_header}",
            f"Content-Length: {length}",
            "Connection: keep-alive",
        ]
        lines += [f"{name}: {value}" for name, value in self._headers + self._checked(extra)]
        try:
            return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), target
        except UnicodeEncodeError as exc:
            raise ValueError(f"headers must be Latin-1 text: {exc}") from exc

    async def send_range(
        self,
        method: str,
        path: str,
        file: Path,
        offset: int,
        length: int,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> RawResponse:
        """Send ``length`` bytes of ``file`` from ``offset`` as the body; return the answer.

        ``path`` is percent-encoded and appended to the base URL's prefix.
        ``on_progress(n)`` runs on the event loop after each piece handed to
        the kernel (they sum to ``length`` when the body went out whole).
        Error statuses are returned, not raised.

        Raises:
            SizeMismatchError: the file ends before ``offset + length`` (the
                connection is closed, so the server sees a truncated body).
            BulkTransportError: connecting, sending or reading the answer failed.
            OSError: the file cannot be opened.
            ValueError: invalid method, path, header or range.
            RuntimeError: the sender is closed.
        """
        if offset < 0 or length < 0:
            raise ValueError(f"invalid range: offset {offset}, length {length}")
        if self._closed:
            raise RuntimeError("FileSender is closed")
        head, target = self._head(method, path, length, headers, params)
        loop = asyncio.get_running_loop()
        report: Callable[[int], None] | None = None
        if on_progress is not None:

            def report(n: int) -> None:
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    loop.call_soon_threadsafe(on_progress, n)

        call = _Call(report)
        request = _Request(method, f"{method} {self._origin}{target}", head, file, offset, length)
        future = loop.run_in_executor(None, self._send_blocking, call, request)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # always retrieved
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            call.abort()
            # The shut-down socket makes the worker fail at once; wait for it
            # so the file and socket are closed when the cancellation lands.
            with contextlib.suppress(Exception):
                await future
            raise

    def close(self) -> None:
        """Close the idle connections; later ``send_range`` calls raise RuntimeError."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for sock in idle:
            _close(sock)

    # --- worker thread ------------------------------------------------------------

    def _send_blocking(self, call: _Call, request: _Request) -> RawResponse:
        with request.file.open("rb", buffering=0) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < request.offset + request.length:
                raise request.shrunk(size)
            try:
                sock, reused = self._checkout(call)
                try:
                    return self._attempt(call, sock, request, fh, resendable=reused)
                except _ResendableError:
                    # urllib3's rule: a kept-alive connection may have been
                    # closed by the server just now; send again, once, on a
                    # new connection, since none of the body went out.
                    sock = self._connect(call)
                    return self._attempt(call, sock, request, fh, resendable=False)
            except (OSError, http.client.HTTPException) as exc:
                if call.cancelled:
                    raise _CancelledError from exc
                raise BulkTransportError(f"{request.where}: {_describe(exc)}") from exc

    def _checkout(self, call: _Call) -> tuple[socket.socket, bool]:
        """An idle connection that still looks open (True), else a new one (False)."""
        while True:
            with self._lock:
                sock = self._idle.pop() if self._idle else None  # the newest first
            if sock is None:
                return self._connect(call), False
            if not _readable(sock):
                try:
                    call.attach(sock)
                except _CancelledError:
                    _close(sock)
                    raise
                return sock, True
            _close(sock)

    def _checkin(self, call: _Call, sock: socket.socket, reusable: bool) -> None:
        if call.detach() and reusable:
            with self._lock:
                if not self._closed and len(self._idle) < self._max_idle:
                    self._idle.append(sock)
                    return
        _close(sock)

    def _connect(self, call: _Call) -> socket.socket:
        """A new connection (TLS handshake done), attached to ``call`` so it can be aborted."""
        infos = socket.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        failure = OSError(f"{self._host} has no address")
        for family, kind, proto, _name, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                call.attach(sock)
                sock.settimeout(self._connect_timeout)
                sock.connect(address)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self._tls is not None:
                    sock = self._tls.wrap_socket(
                        sock, server_hostname=self._host, do_handshake_on_connect=False
                    )
                    call.attach(sock)  # before the handshake, so abort() reaches it
                    sock.do_handshake()
                sock.settimeout(self._timeout)
            except OSError as exc:
                call.detach()
                _close(sock)
                if call.cancelled:
                    raise _CancelledError from exc
                failure = exc
                continue
            except BaseException:
                call.detach()
                _close(sock)
                raise
            return sock
        raise failure

    def _attempt(
        self,
        call: _Call,
        sock: socket.socket,
        request: _Request,
        fh: io.FileIO,
        *,
        resendable: bool,
    ) -> RawResponse:
        """One request on ``sock``, which is pooled or closed before this returns.

        Raises:
            _ResendableError: ``resendable``, and the connection broke (a
                send failed, or it closed without a status line) before any of
                the body went out.
        """
        sent = [0]
        reusable = False
        try:
            try:
                sock.sendall(request.head)
                self._send_body(call, sock, request, fh, sent)
            except OSError:
                # A server may answer early (a 4xx before the whole body) and
                # close: that answer is worth more than the send error.
                if not call.cancelled and _readable(sock):
                    with contextlib.suppress(OSError, http.client.HTTPException):
                        return self._read_answer(sock, request.method)[0]
                raise
            answer, reusable = self._read_answer(sock, request.method)
        except ConnectionError as exc:
            if resendable and sent[0] == 0 and not call.cancelled:
                raise _ResendableError from exc
            raise
        finally:
            self._checkin(call, sock, reusable)
        return answer

    def _send_body(
        self, call: _Call, sock: socket.socket, request: _Request, fh: io.FileIO, sent: list[int]
    ) -> None:
        """The range in pieces of ``piece_size``, reporting progress after each."""
        send = (
            self._sendfile_sender(sock, fh)
            if self._tls is None
            else self._tls_sender(sock, fh, request)
        )
        offset, end = request.offset, request.offset + request.length
        while offset < end:
            piece_end = min(end, offset + self._piece)
            start = offset
            while offset < piece_end:
                n = send(offset, piece_end - offset)
                if n == 0:  # end of file: it shrank after the size check
                    raise request.shrunk(os.fstat(fh.fileno()).st_size)
                offset += n
                sent[0] += n
            if call.cancelled:
                raise _CancelledError
            if call.report is not None:
                call.report(piece_end - start)

    def _sendfile_sender(self, sock: socket.socket, fh: io.FileIO) -> Callable[[int, int], int]:
        """``sendfile(2)``, waiting for room with poll (the socket is non-blocking).

        Unlike ``socket.sendfile`` this never falls back to ``send`` silently
        and tells end of file (the file shrank) from a finished range.
        """
        out, src = sock.fileno(), fh.fileno()
        poller = select.poll()
        poller.register(out, select.POLLOUT)
        wait_ms = max(1, round(self._timeout * 1000))

        def send(offset: int, count: int) -> int:
            while True:
                try:
                    return os.sendfile(out, src, offset, count)
                except BlockingIOError:
                    if not poller.poll(wait_ms):
                        raise TimeoutError("timed out sending the body") from None

        return send

    @staticmethod
    def _tls_sender(
        sock: socket.socket, fh: io.FileIO, request: _Request
    ) -> Callable[[int, int], int]:
        """Read into one reused buffer and ``sendall`` (TLS encrypts in user space)."""
        view = memoryview(bytearray(max(1, min(TLS_BUFFER, request.length))))
        fh.seek(request.offset)

        def send(_offset: int, count: int) -> int:  # sequential: the file position follows
            n = fh.readinto(view[: min(len(view), count)])
            if n:
                sock.sendall(view[:n])
            return n or 0

        return send

    @staticmethod
    def _read_answer(sock: socket.socket, method: str) -> tuple[RawResponse, bool]:
        """The whole answer, and whether the connection may carry another request."""
        response = http.client.HTTPResponse(sock, method=method)
        try:
            response.begin()
            body = bytearray()
            while piece := response.read(64 * 1024):
                body += piece
                if len(body) > MAX_ANSWER:
                    raise http.client.HTTPException(f"answer longer than {MAX_ANSWER} bytes")
            if response.length:  # read(amt) does not raise for a cut Content-Length body
                raise http.client.IncompleteRead(bytes(body), response.length)
            answer = RawResponse(response.status, response.getheaders(), bytes(body))
            return answer, not response.will_close
        finally:
            response.close()


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    where: str
    """Method and URL, for messages."""
    head: bytes
    file: Path
    offset: int
    length: int

    def shrunk(self, size: int) -> errors.SizeMismatchError:
        return errors.SizeMismatchError(
            f"{self.file} is {size} bytes now, too short to send {self.length} bytes from"
            f" offset {self.offset}: it changed after it was read",
            path=str(self.file),
            expected=self.offset + self.length,
            actual=size,
        )
