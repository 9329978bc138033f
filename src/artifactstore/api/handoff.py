"""Same-host handoff: a client on this machine passes open files, not their bytes.

Why: when the CLI and the server share a machine, the bytes of a PATCH body
cross loopback TCP (a kernel copy on each side) and uvicorn's body handling
on the same cores that must hash them; on the 2-core reference VM that work
alone kept a 1 GiB upload at ~0.3x the sha256 rate (docs/PERFORMANCE.md).
Here the client passes its open file descriptor (``SCM_RIGHTS``) over a Unix
socket in the data dir and the server reads the file itself; or, for a
download, the server passes a read-only descriptor of a local copy back.

This module owns the socket: binding, accepting, the peer check, receiving
one request with its descriptors and sending one answer (with a descriptor
for ``open``). What a request asks for - ``append`` to an upload session,
``store`` a whole file as a blob, ``open`` a blob - is ``api.handoff_ops``.

Who may connect: the socket is created mode 0600 in the data dir and every
peer must have the server's own uid (``SO_PEERCRED``), the same people who
can read ``<data_dir>/admin-token``. Only regular files are read, with
``pread``; no ``mmap``, so a file truncated meanwhile ends the read early
with an error instead of a SIGBUS.

Protocol (``SOCK_SEQPACKET``, one request per connection): the client sends
one JSON message (at most ``MAX_MESSAGE_BYTES``) with at most one descriptor
attached, and gets one JSON message back: the op's answer, or the REST error
shape ``{"error": {"code", "message", "detail"}, "status": n}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import stat
import struct
import time
import uuid
from typing import TYPE_CHECKING

from artifactstore import errors as e
from artifactstore.api import handoff_ops
from artifactstore.api.errors import status_for
from artifactstore.protocol import error_body

if TYPE_CHECKING:
    from pathlib import Path

    from artifactstore.api.metrics import Metrics
    from artifactstore.registry import Uploads

__all__ = ["MAX_MESSAGE_BYTES", "HandoffListener"]

log = logging.getLogger("artifactstore.api.handoff")

MAX_MESSAGE_BYTES = 4096
REQUEST_TIMEOUT_SECONDS = 10.0
STOP_GRACE_SECONDS = 30.0  # as long as uvicorn's graceful shutdown (cli/serve.py)
_MAX_UNIX_PATH = 107  # sun_path is 108 bytes with the terminating NUL
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


class HandoffListener:
    """Accepts handoff connections on ``path`` and runs each one's request."""

    def __init__(self, path: Path, uploads: Uploads, metrics: Metrics) -> None:
        self.path = path
        self.uploads = uploads
        self.metrics = metrics
        self.server_id = uuid.uuid4().hex
        """Named with the socket at ``GET /v1/uploads/handoff``; ``store`` and ``open``
        requests must carry it, so a client never stores into another server's socket."""
        self._sock: socket.socket | None = None
        self._owner = -1  # flock on ``<socket>.lock``: held while this server owns the socket
        self._accepting: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def active(self) -> bool:
        """Whether clients can connect (False where Unix sockets or the path are unusable)."""
        return self._sock is not None

    def start(self) -> None:
        """Bind the socket and start accepting; logs and stays inactive if that fails.

        Another live server on the same data dir keeps its socket: ownership
        is a ``flock`` on ``<socket>.lock``, which dies with its process, so
        only a socket whose owner is gone is replaced.
        """
        if len(os.fsencode(self.path)) > _MAX_UNIX_PATH:
            log.info("no same-host handoff: socket path %s is too long", self.path)
            return
        if not self._take_ownership():
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                    self.path.unlink()  # left by a server that was killed
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError as exc:
            log.info("no same-host handoff: %s", exc)
            self._give_up_ownership()
            return
        try:
            sock.bind(os.fspath(self.path))
            self.path.chmod(0o600)  # connecting needs write permission on the socket
            sock.listen(64)
            sock.settimeout(0.0)  # non-blocking, for loop.sock_accept
        except OSError as exc:
            sock.close()
            log.info("no same-host handoff on %s: %s", self.path, exc)
            self._give_up_ownership()
            return
        self._sock = sock
        self._accepting = asyncio.create_task(self._accept_loop(sock), name="handoff-accept")

    def _take_ownership(self) -> bool:
        lock = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.info("no same-host handoff: %s", exc)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            log.warning(
                "no same-host handoff: another server on this data dir serves %s", self.path
            )
            return False
        self._owner = fd
        return True

    def _give_up_ownership(self) -> None:
        if self._owner >= 0:
            os.close(self._owner)
            self._owner = -1

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop accepting, let appends in flight finish for ``grace`` seconds, remove the socket.

        Appends still running then are cancelled; what they read stays staged,
        and the client resumes from the session's offset. A cancelled store
        removes its staged bytes and stores nothing.
        """
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
            self._accepting = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._give_up_ownership()
        if self._connections:
            _, late = await asyncio.wait(set(self._connections), timeout=grace)
            for task in late:
                task.cancel()
            for task in late:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:  # EMFILE and friends: back off, keep serving
                log.warning("handoff accept failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            task = asyncio.create_task(self._serve(conn), name="handoff")
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _serve(self, conn: socket.socket) -> None:
        started = time.perf_counter()
        request = handoff_ops.Request()
        sent_fd: int | None = None
        with conn:
            conn.settimeout(0.0)  # non-blocking: waits happen on the event loop
            try:
                answer = await self._handle(conn, request)
                body, sent_fd, status = answer.body, answer.fd, 200
            except e.ArtifactStoreError as exc:
                status = status_for(exc)
                body = {"status": status, **error_body(exc.code, exc.message, exc.detail)}
            except OSError as exc:
                log.info("handoff connection failed: %s", exc)
                return
            encoded = json.dumps(body).encode()
            try:
                with contextlib.suppress(OSError):  # the client may be gone; the work is done
                    await _send(conn, encoded, sent_fd)
            finally:
                if sent_fd is not None:
                    os.close(sent_fd)
        self.metrics.record(
            method="HANDOFF",
            path=request.path,
            route=request.route,
            status=status,
            seconds=time.perf_counter() - started,
            received=request.received,
            sent=len(encoded),
            client="unix",
        )

    async def _handle(
        self, conn: socket.socket, request: handoff_ops.Request
    ) -> handoff_ops.Answer:
        _pid, uid, _gid = _PEERCRED.unpack(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        )
        if uid != os.geteuid():
            raise e.ForbiddenError("only the server's own user may hand files over")
        message, fds, flags = await _receive(conn)
        with contextlib.ExitStack() as stack:
            for fd in fds:
                stack.callback(os.close, fd)
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                raise e.InvalidInputError("handoff message too long or more than one descriptor")
            return await handoff_ops.run(
                message,
                fds,
                uid=uid,
                server_id=self.server_id,
                uploads=self.uploads,
                metrics=self.metrics,
                request=request,
            )


async def _send(conn: socket.socket, message: bytes, fd: int | None) -> None:
    """Send the one answer message (with ``fd`` attached), waiting on the event loop if full."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            if fd is None:
                conn.send(message)
            else:
                socket.send_fds(conn, [message], [fd])
        except BlockingIOError:
            writable: asyncio.Future[None] = loop.create_future()
            loop.add_writer(conn.fileno(), _resolve, writable)
            try:
                await asyncio.wait_for(writable, REQUEST_TIMEOUT_SECONDS)
            finally:
                loop.remove_writer(conn.fileno())
            continue
        return


async def _receive(conn: socket.socket) -> tuple[bytes, list[int], int]:
    """One message and its descriptors, waiting on the event loop (no thread held).

    Raises:
        InvalidInputError: nothing arrived within ``REQUEST_TIMEOUT_SECONDS``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REQUEST_TIMEOUT_SECONDS
    while True:
        try:
            message, fds, flags, _ = socket.recv_fds(
                conn, MAX_MESSAGE_BYTES, 1, socket.MSG_CMSG_CLOEXEC
            )
        except BlockingIOError:
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(conn.fileno(), _resolve, readable)
            try:
                await asyncio.wait_for(readable, max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise e.InvalidInputError("no handoff request within the time limit") from None
            finally:
                loop.remove_reader(conn.fileno())
            continue
        return message, fds, flags


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
