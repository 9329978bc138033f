"""HTTP/1.1 connections for bulk transfers: a keep-alive pool, request heads, small answers.

Why: ``rawhttp.FileSender`` moves bulk bodies with ``sendfile(2)`` and
``recv_into`` on blocking sockets in worker threads, which no HTTP library
offers; this module holds what any such request needs, whatever its body.

Owns: parsing the base URL, building the request head by hand (RFC 9112:
request line, ``Host``, ``Content-Length`` when there is a body,
``Connection: keep-alive``, then the caller's headers, all validated), a
small pool of idle keep-alive connections (TLS included), running a blocking
exchange in the event loop's default executor with prompt cancellation (the
socket is shut down under the worker), and reading a small answer whole with
the stdlib's ``http.client.HTTPResponse`` (Content-Length, chunked,
read-until-close). It does not send or receive bulk bodies
(``client/rawhttp.py``), map statuses to ``artifactstore.errors``, or follow
redirects.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import select
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlencode, urlsplit

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["MAX_ANSWER", "BulkTransportError", "Connections", "RawResponse"]

MAX_ANSWER = 16 * 1024 * 1024
"""Longest answer body accepted whole; such answers are a 204 or a JSON error."""

_OWN_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding"})
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DEFAULT_PORTS = {"http": 80, "https": 443}
T = TypeVar("T")


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
    from a socket error and is reported here too. Safe to retry.
    """


class CancelledWork(Exception):  # noqa: N818 - a signal between threads, not an error
    """The awaiting task was cancelled; the worker stops (internal)."""


class ResendableError(Exception):
    """A reused connection failed before anything of the exchange was used: send again."""


class Call:
    """One request's socket, shared with the cancelling side.

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
                raise CancelledWork
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


def _check_token(kind: str, text: str) -> None:
    if not text or not set(text) <= _TCHAR:
        raise ValueError(f"invalid HTTP {kind} {text!r}")


def _check_value(name: str, value: str) -> None:
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"header {name!r}: the value contains CR, LF or NUL")


def close_quietly(sock: socket.socket) -> None:
    """Close, ignoring errors."""
    with contextlib.suppress(OSError):
        sock.close()


def readable(sock: socket.socket) -> bool:
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


def describe(exc: BaseException) -> str:
    """A transport failure in words, for ``BulkTransportError`` messages."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(exc, http.client.IncompleteRead):
        return "the server closed the connection in the middle of its answer"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, OSError) else f"{type(exc).__name__}: {text}"


def read_answer(response: http.client.HTTPResponse) -> tuple[RawResponse, bool]:
    """The rest of an answer whose head was read, and whether the connection may be reused.

    Raises:
        http.client.HTTPException: the body is longer than ``MAX_ANSWER`` or cut short.
    """
    body = bytearray()
    while piece := response.read(64 * 1024):
        body += piece
        if len(body) > MAX_ANSWER:
            raise http.client.HTTPException(f"answer longer than {MAX_ANSWER} bytes")
    if response.length:  # read(amt) does not raise for a cut Content-Length body
        raise http.client.IncompleteRead(bytes(body), response.length)
    answer = RawResponse(response.status, response.getheaders(), bytes(body))
    return answer, not response.will_close


class Connections:
    """A base URL, its default headers and a pool of idle keep-alive connections.

    Blocking sockets driven from worker threads (``asyncio`` default
    executor, as ``asyncio.to_thread``); one thread per request in flight.
    Idle connections are reused (at most ``max_idle``; the pool is shared by
    concurrent calls and guarded by a lock). ``close()`` closes the idle ones;
    connections in use close when their request ends.
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
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in _DEFAULT_PORTS or not url.hostname:
            raise ValueError(f"base URL {base_url!r} must look like http(s)://host[:port][/prefix]")
        if url.query or url.fragment or url.username is not None:
            raise ValueError(f"base URL {base_url!r} must not carry a query, fragment or user")
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
        self._lock = threading.Lock()
        self._idle: list[socket.socket] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._origin}{self._prefix!r}, idle={len(self._idle)})"

    @staticmethod
    def _checked(headers: Mapping[str, str]) -> list[tuple[str, str]]:
        result = []
        for name, value in headers.items():
            _check_token("header name", name)
            _check_value(name, value)
            if name.lower() in _OWN_HEADERS:
                raise ValueError(f"header {name!r} is set by the client itself")
            result.append((name, value))
        return result

    def _head(
        self,
        method: str,
        path: str,
        length: int | None,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
    ) -> tuple[bytes, str]:
        """The encoded request line and header block, and the target; ValueError when invalid.

        ``length`` None: the request has no body (no ``Content-Length`` line).
        """
        _check_token("method", method)
        if not path.startswith("/") or any(c <= " " or c >= "\x7f" for c in path):
            raise ValueError(f"path {path!r} must start with / and be percent-encoded ASCII")
        target = self._prefix + path
        if params:
            target += ("&" if "?" in path else "?") + urlencode(params)
        extra = dict(headers or {})
        # Callers used to setting Content-Length themselves may repeat the right one.
        for name in [n for n in extra if n.lower() == "content-length"]:
            if length is None or extra.pop(name) != str(length):
                raise ValueError(f"Content-Length {length} is set from the body")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._host_header}"]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        lines.append("Connection: keep-alive")
        lines += [f"{name}: {value}" for name, value in self._headers + self._checked(extra)]
        try:
            return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), target
        except UnicodeEncodeError as exc:
            raise ValueError(f"headers must be Latin-1 text: {exc}") from exc

    async def _run(
        self,
        on_progress: Callable[[int], None] | None,
        work: Callable[[Call], T],
    ) -> T:
        """Run ``work(call)`` on a worker thread; cancelling aborts its socket and waits for it.

        ``on_progress`` becomes ``call.report``, which the worker calls and
        which runs ``on_progress`` on the event loop.
        """
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        loop = asyncio.get_running_loop()
        report: Callable[[int], None] | None = None
        if on_progress is not None:

            def report(n: int) -> None:
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    loop.call_soon_threadsafe(on_progress, n)

        call = Call(report)
        future = loop.run_in_executor(None, work, call)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # always retrieved
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            call.abort()
            # The shut-down socket makes the worker fail at once; wait for it
            # so files and sockets are closed when the cancellation lands.
            with contextlib.suppress(Exception):
                await future
            raise

    def close(self) -> None:
        """Close the idle connections; later requests raise RuntimeError."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for sock in idle:
            close_quietly(sock)

    # --- worker thread ------------------------------------------------------------

    def _exchange(self, call: Call, where: str, attempt: Callable[[socket.socket, bool], T]) -> T:
        """``attempt(sock, resendable)`` on a pooled or new connection; transport errors wrapped.

        ``attempt`` pools or closes the socket before it returns or raises.

        Raises:
            BulkTransportError: connecting failed, or ``attempt`` raised
                ``OSError`` or ``HTTPException`` (``where`` starts the message).
        """
        try:
            sock, reused = self._checkout(call)
            try:
                return attempt(sock, reused)
            except ResendableError:
                # urllib3's rule: a kept-alive connection may have been closed
                # by the server just now; send again, once, on a new connection.
                fresh = self._connect(call)
                return attempt(fresh, False)  # noqa: FBT003 - the callback's flag
        except (OSError, http.client.HTTPException) as exc:
            if call.cancelled:
                raise CancelledWork from exc
            raise BulkTransportError(f"{where}: {describe(exc)}") from exc

    def _checkout(self, call: Call) -> tuple[socket.socket, bool]:
        """An idle connection that still looks open (True), else a new one (False)."""
        while True:
            with self._lock:
                sock = self._idle.pop() if self._idle else None  # the newest first
            if sock is None:
                return self._connect(call), False
            if not readable(sock):
                try:
                    call.attach(sock)
                except CancelledWork:
                    close_quietly(sock)
                    raise
                return sock, True
            close_quietly(sock)

    def _checkin(self, call: Call, sock: socket.socket, reusable: bool) -> None:
        if call.detach() and reusable:
            with self._lock:
                if not self._closed and len(self._idle) < self._max_idle:
                    self._idle.append(sock)
                    return
        close_quietly(sock)

    def _connect(self, call: Call) -> socket.socket:
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
                close_quietly(sock)
                if call.cancelled:
                    raise CancelledWork from exc
                failure = exc
                continue
            except BaseException:
                call.detach()
                close_quietly(sock)
                raise
            return sock
        raise failure
