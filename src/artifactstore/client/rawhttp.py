"""Bulk HTTP/1.1 bodies: file ranges sent with ``sendfile(2)``, GETs received into a file.

Why: streaming a PATCH body through httpx reads every block into Python
``bytes``, copies it on its way to the socket and costs event-loop work per
block; on a 2-core machine shared with the server that CPU is the bottleneck
of a large upload. Here the kernel moves the bytes from the page cache into
the socket (``sendfile(2)``), so the client spends almost nothing per byte.
Downloads go the other way without per-chunk ``bytes`` objects: the body is
received with ``recv_into`` straight into the buffers of a
``client.sink.VerifiedFile``, which hashes and writes them on its own threads.

Owns: ``FileSender.send_range`` (a file range as a request body) and
``FileSender.get_into`` (a GET whose 200/206 body goes into a
``VerifiedFile``, resuming with ``Range``). Over TLS ``sendfile`` is
impossible (the bytes must be encrypted in user space): the range is read
into one reused buffer and sent with ``sendall`` (``socket.sendfile``'s own
fallback for ``SSLSocket`` reads 8 KiB ``bytes`` objects, far more CPU per
byte); received bodies use ``SSLSocket.recv_into``. Connections, request
heads and small answers are ``client/http1.py``'s.

It does not: map statuses to ``artifactstore.errors`` (callers get a
``RawResponse``, error statuses included, and use
``protocol.error_from_body``), retry beyond one re-send on a stale idle
connection, or follow redirects.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import select
from dataclasses import dataclass
from typing import TYPE_CHECKING

from artifactstore import errors
from artifactstore.client.http1 import (
    MAX_ANSWER,
    BulkTransportError,
    Call,
    CancelledWork,
    Connections,
    RawResponse,
    ResendableError,
    read_answer,
    readable,
)

if TYPE_CHECKING:
    import io
    import socket
    import ssl
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from artifactstore.client.sink import VerifiedFile

__all__ = ["MAX_ANSWER", "BulkTransportError", "FileSender", "RawResponse"]

PIECE_SIZE = 8 * 1024 * 1024
"""Bytes per ``sendfile`` round between progress reports (and checks for cancellation)."""
TLS_BUFFER = 1024 * 1024
"""Bytes read and encrypted at once over TLS (one buffer per request, reused)."""

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class FileSender(Connections):
    """Sends requests whose body is a range of a local file; receives GET bodies into files.

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
        if piece_size <= 0:
            raise ValueError("piece_size must be positive")
        super().__init__(
            base_url,
            headers,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_idle=max_idle,
            ssl_context=ssl_context,
        )
        self._piece = piece_size

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
        head, target = self._head(method, path, length, headers, params)
        request = _Request(method, f"{method} {self._origin}{target}", head, file, offset, length)
        return await self._run(on_progress, lambda call: self._send_blocking(call, request))

    async def get_into(
        self,
        path: str,
        sink: VerifiedFile,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> RawResponse:
        """GET ``path``; a 200/206 body goes into ``sink`` (not committed), any other answer back.

        When ``sink`` already holds bytes, ``Range: bytes=<written>-`` is sent
        (a ``Range`` in ``headers`` must be exactly that). A 206 must start at
        ``sink.written`` and end at ``sink.size``; a 200 to a Range request
        restarts the sink (``on_progress`` then gets minus the bytes
        forgotten). ``on_progress(n)`` runs on the event loop after each
        buffer received. On success the answer's body is empty; for other
        statuses it is the (small) body, for ``protocol.error_from_body``.

        Raises:
            BulkTransportError: connecting, sending or receiving failed, the
                body was cut short or timed out; what arrived stays in
                ``sink``, so calling again resumes.
            SizeMismatchError: the answer announces a body that does not end
                at ``sink.size`` (longer or shorter), or a chunked body runs past it.
            ValueError: invalid path, header, or a Range that is not the sink's.
            RuntimeError: the sender is closed.
        """
        extra = dict(headers or {})
        wanted = f"bytes={sink.written}-" if sink.written else None
        given = [name for name in extra if name.lower() == "range"]
        if given and [extra[name] for name in given] != [wanted]:
            raise ValueError(f"Range is set from the sink: {wanted or 'none'}, not {given}")
        if wanted is not None and not given:
            extra["Range"] = wanted
        head, target = self._head("GET", path, None, extra, params)
        where = f"GET {self._origin}{target}"
        return await self._run(
            on_progress,
            lambda call: self._exchange(
                call, where, lambda sock, again: self._get(call, sock, head, sink, again)
            ),
        )

    # --- worker thread: GET ------------------------------------------------------------

    def _get(
        self, call: Call, sock: socket.socket, head: bytes, sink: VerifiedFile, resendable: bool
    ) -> RawResponse:
        """One GET on ``sock``, which is pooled or closed before this returns."""
        reusable = False
        try:
            response = http.client.HTTPResponse(sock, method="GET")
            try:
                try:
                    sock.sendall(head)
                    response.begin()
                except ConnectionError as exc:
                    if resendable and not call.cancelled:
                        raise ResendableError from exc
                    raise
                if response.status not in {200, 206}:
                    answer, reusable = read_answer(response)
                    return answer
                self._receive(call, response, sink)
                reusable = not response.will_close
                return RawResponse(response.status, response.getheaders(), b"")
            finally:
                response.close()
        finally:
            self._checkin(call, sock, reusable)

    @staticmethod
    def _receive(call: Call, response: http.client.HTTPResponse, sink: VerifiedFile) -> None:
        """Check that the body is the rest of the sink's bytes, then receive it into the sink."""
        if response.status == 200 and sink.written:  # noqa: PLR2004 - the Range was ignored
            forgotten = sink.written
            sink.restart()
            if call.report is not None:
                call.report(-forgotten)
        start = 0
        if response.status == 206:  # noqa: PLR2004 - Partial Content
            found = _CONTENT_RANGE.fullmatch(response.getheader("Content-Range") or "")
            first, last, total = found.groups() if found else ("", "", "")
            ends = (first, last) == (str(sink.written), str(sink.size - 1))
            if not ends or total not in {str(sink.size), "*"}:
                raise _mismatch(sink, f"Content-Range {response.getheader('Content-Range')}")
            start = int(first)
        expected = sink.size - start
        if response.length is not None:  # Content-Length: recv_into the sink's buffers
            if response.length != expected:
                raise _mismatch(sink, f"Content-Length {response.length}")
            # readinto1: what the head's read buffered first, then one
            # recv_into (SSLSocket.recv_into over TLS) straight into the sink.
            sink.receive(response.fp.readinto1, expected, call.report)
            return
        # Chunked or until close (a proxy's doing): HTTPResponse unframes it.
        sink.receive(response.readinto, expected, call.report)
        if response.read(1):
            raise _mismatch(sink, "a body longer than that")

    # --- worker thread: send_range -----------------------------------------------------

    def _send_blocking(self, call: Call, request: _Request) -> RawResponse:
        with request.file.open("rb", buffering=0) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < request.offset + request.length:
                raise request.shrunk(size)
            return self._exchange(
                call,
                request.where,
                lambda sock, again: self._attempt(call, sock, request, fh, resendable=again),
            )

    def _attempt(
        self,
        call: Call,
        sock: socket.socket,
        request: _Request,
        fh: io.FileIO,
        *,
        resendable: bool,
    ) -> RawResponse:
        """One request on ``sock``, which is pooled or closed before this returns.

        Raises:
            ResendableError: ``resendable``, and the connection broke (a
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
                if not call.cancelled and readable(sock):
                    with contextlib.suppress(OSError, http.client.HTTPException):
                        return self._read_answer(sock, request.method)[0]
                raise
            answer, reusable = self._read_answer(sock, request.method)
        except ConnectionError as exc:
            if resendable and sent[0] == 0 and not call.cancelled:
                raise ResendableError from exc
            raise
        finally:
            self._checkin(call, sock, reusable)
        return answer

    def _send_body(
        self, call: Call, sock: socket.socket, request: _Request, fh: io.FileIO, sent: list[int]
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
                raise CancelledWork
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
            return read_answer(response)
        finally:
            response.close()


def _mismatch(sink: VerifiedFile, what: str) -> errors.SizeMismatchError:
    return errors.SizeMismatchError(
        f"{sink.name}: the server answered with {what}, but {sink.size - sink.written} bytes"
        f" from offset {sink.written} were expected; the file was not written",
        path=sink.name,
        expected=sink.size,
    )


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
