"""Same-host handoff (``api.handoff``) against the real app, PostgreSQL and ``local`` backend.

The client side is the CLI's own ``HandoffClient``; malformed requests go
through a raw ``SOCK_SEQPACKET`` socket. Every appended byte is checked by
finalizing the session and reading the blob back.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pytest
from tests.integration.handoff_support import random_file, raw_request

from artifactstore import errors
from artifactstore.api import handoff
from artifactstore.api.handoff import HandoffListener
from artifactstore.api.metrics import Metrics
from artifactstore.client.errors import ServerUnreachableError
from artifactstore.client.handoff import HandoffClient, HandoffUnavailableError
from artifactstore.digests import Digest
from artifactstore.protocol import HANDOFF_HEADER
from artifactstore.registry import Registry, Uploads, UploadSession

if TYPE_CHECKING:
    import httpx

MIB = 1024 * 1024


async def _session(api: httpx.AsyncClient, size: int | None = None) -> tuple[str, str]:
    """A new session's id and the socket path the server names for it."""
    response = await api.post("/v1/uploads", json={} if size is None else {"size": size})
    assert response.status_code == 201, response.text
    return response.json()["id"], unquote(response.headers[HANDOFF_HEADER])


async def test_a_handed_over_file_is_stored_byte_for_byte(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    src = random_file(tmp_path, 9 * MIB + 123)
    data = src.read_bytes()
    session, path = await _session(api, len(data))
    head = await api.head(f"/v1/uploads/{session}")
    assert unquote(head.headers[HANDOFF_HEADER]) == path
    client = HandoffClient(path)
    offset = await client.append(session, src, 0, 4 * MIB)
    assert offset == 4 * MIB
    offset = await client.append(session, src, offset, len(data) - offset)
    assert offset == len(data)
    assert (await api.head(f"/v1/uploads/{session}")).headers["upload-offset"] == str(len(data))
    sha256 = "sha256:" + hashlib.sha256(data).hexdigest()
    done = await api.put(f"/v1/uploads/{session}", params={"sha256": sha256})
    assert done.status_code == 201, done.text
    blob = await api.get(f"/v1/blobs/{done.json()['sha256']}")
    assert blob.content == data
    log = await api.get("/metrics")
    assert 'method="HANDOFF"' in log.text


async def test_a_wrong_offset_is_409_with_the_current_offset(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    src = random_file(tmp_path, 2 * MIB)
    session, path = await _session(api)
    client = HandoffClient(path)
    await client.append(session, src, 0, MIB)
    with pytest.raises(errors.UploadOffsetMismatchError) as caught:
        await client.append(session, src, 0, MIB)
    assert caught.value.detail["offset"] == MIB


async def test_an_unknown_session_is_404(api: httpx.AsyncClient, tmp_path: Path) -> None:
    src = random_file(tmp_path, 1024)
    _, path = await _session(api)
    with pytest.raises(errors.UploadNotFoundError):
        await HandoffClient(path).append("6f1c3b1e-0000-4000-8000-000000000000", src, 0, 1024)


async def test_a_range_beyond_the_declared_size_is_413_and_stores_nothing(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    src = random_file(tmp_path, 2 * MIB)
    session, path = await _session(api, MIB)
    with pytest.raises(errors.TooLargeError):
        await HandoffClient(path).append(session, src, 0, 2 * MIB)
    assert (await api.head(f"/v1/uploads/{session}")).headers["upload-offset"] == "0"


async def test_a_file_shorter_than_the_range_keeps_what_was_read(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    src = random_file(tmp_path, 5 * MIB)
    session, path = await _session(api)
    with pytest.raises(errors.SizeMismatchError):
        await HandoffClient(path).append(session, src, 0, 6 * MIB)
    offset = (await api.head(f"/v1/uploads/{session}")).headers["upload-offset"]
    assert offset == str(5 * MIB)  # staged and durable, as for a broken PATCH body
    sha256 = "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()
    done = await api.put(f"/v1/uploads/{session}", params={"sha256": sha256})
    assert done.status_code == 201, done.text


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b"not json", "JSON with upload, offset and length"),
        (b'{"upload": "x", "offset": 0, "length": 1}', "JSON with upload"),
        (b'{"upload": "%s", "offset": -1, "length": 1}', "integers in"),
        (b'{"upload": "%s", "offset": true, "length": 1}', "integers in"),
        (b'{"upload": "%s", "offset": 1, "length": 9223372036854775807}', "beyond"),
        (b"x" * 5000, "too long"),
    ],
)
async def test_malformed_requests_get_a_400_answer(
    api: httpx.AsyncClient, tmp_path: Path, message: bytes, expected: str
) -> None:
    src = random_file(tmp_path, 1024)
    session, path = await _session(api)
    if b"%s" in message:
        message = message.replace(b"%s", session.encode())
    with src.open("rb") as fh:
        answer = await asyncio.to_thread(raw_request, path, message, [fh.fileno()])
    assert answer["status"] == 400, answer
    assert expected in answer["error"]["message"]


async def test_only_one_regular_file_is_accepted(api: httpx.AsyncClient, tmp_path: Path) -> None:
    session, path = await _session(api)
    message = json.dumps({"upload": session, "offset": 0, "length": 10}).encode()
    none = await asyncio.to_thread(raw_request, path, message, [])
    assert "exactly one file descriptor" in none["error"]["message"]
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"0123456789")
        piped = await asyncio.to_thread(raw_request, path, message, [read_end])
        assert "only regular files" in piped["error"]["message"]
        two = await asyncio.to_thread(raw_request, path, message, [read_end, write_end])
        assert two["status"] == 400
    finally:
        os.close(read_end)
        os.close(write_end)
    directory = os.open(tmp_path, os.O_RDONLY)
    try:
        answer = await asyncio.to_thread(raw_request, path, message, [directory])
        assert "only regular files" in answer["error"]["message"]
    finally:
        os.close(directory)
    assert (await api.head(f"/v1/uploads/{session}")).headers["upload-offset"] == "0"


async def test_a_missing_socket_is_unavailable_not_an_error(tmp_path: Path) -> None:
    src = random_file(tmp_path, 10)
    with pytest.raises(HandoffUnavailableError):
        await HandoffClient(str(tmp_path / "nothing.sock")).append("s", src, 0, 10)


async def test_the_socket_is_private_to_the_servers_user(api: httpx.AsyncClient) -> None:
    _, path = await _session(api)
    await asyncio.to_thread(_check_private, Path(path))


def _check_private(socket_path: Path) -> None:
    assert socket_path.stat().st_mode & 0o777 == 0o600
    if os.geteuid() != 0:
        return
    # Another user is refused by the socket's mode and, were it opened, by
    # SO_PEERCRED. A hard link outside the private data dir (and pytest's
    # private base directory) reaches the socket.
    shared = Path(tempfile.mkdtemp())
    link = shared / "handoff.sock"
    try:
        shared.chmod(0o755)
        link.hardlink_to(socket_path)
        for mode, expected in ((0o600, "refused"), (0o666, "403")):
            link.chmod(mode)
            assert _as_nobody(str(link)) == expected
    finally:
        shutil.rmtree(shared)


def _as_nobody(path: str) -> str:
    """Connect from a child process running as ``nobody``; what happened, in one word."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_end)
        outcome = b"?"
        try:
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
                sock.settimeout(10)
                sock.connect(path)
                outcome = str(json.loads(sock.recv(65536)).get("status")).encode()
        except PermissionError:
            outcome = b"refused"
        except BaseException:  # noqa: BLE001 - report anything else as is
            outcome = b"error"
        os.write(write_end, outcome)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        reported = fh.read().decode()
    os.waitpid(pid, 0)
    return reported


async def test_a_silent_client_is_answered_and_holds_no_thread(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handoff, "REQUEST_TIMEOUT_SECONDS", 0.3)
    _, path = await _session(api)

    def silent() -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.settimeout(30)
            sock.connect(path)
            answer: dict[str, Any] = json.loads(sock.recv(65536))
            return answer

    # More silent clients than the default thread pool has workers (cpu + 4).
    answers = await asyncio.gather(
        *(asyncio.to_thread(silent) for _ in range((os.cpu_count() or 1) + 6))
    )
    assert {a["error"]["message"] for a in answers} == {"no handoff request within the time limit"}


async def _in_flight(
    registry: Registry, tmp_path: Path
) -> tuple[HandoffListener, Uploads, UploadSession, asyncio.Task[int], int]:
    """A listener of its own and a 384 MiB handoff started on it, seen staging its first bytes."""
    uploads = Uploads(registry)
    listener = HandoffListener(tmp_path / "h.sock", uploads, Metrics())
    listener.start()
    size = 384 * MIB
    src = tmp_path / "zeros.bin"
    with src.open("wb") as fh:
        fh.truncate(size)  # sparse: read at memory speed
    session = await uploads.create(actor="t")
    assert isinstance(session, UploadSession)
    task = asyncio.create_task(
        HandoffClient(str(listener.path)).append(str(session.id), src, 0, size)
    )
    staged = uploads.path(session.id)
    while staged.stat().st_size == 0:
        assert not task.done(), task
        await asyncio.sleep(0.002)
    return listener, uploads, session, task, size


async def test_stop_lets_an_append_in_flight_finish(registry: Registry, tmp_path: Path) -> None:
    listener, uploads, session, task, size = await _in_flight(registry, tmp_path)
    assert uploads.path(session.id).stat().st_size < size  # still appending
    await listener.stop(grace=60)
    assert await task == size
    assert (await uploads.get(session.id)).offset == size
    assert not listener.path.exists()


async def test_stop_after_the_grace_cancels_and_keeps_what_was_read(
    registry: Registry, tmp_path: Path
) -> None:
    listener, uploads, session, task, size = await _in_flight(registry, tmp_path)
    await listener.stop(grace=0)
    with pytest.raises(ServerUnreachableError):
        await task
    kept = (await uploads.get(session.id)).offset
    assert kept < size
    rest = HandoffListener(tmp_path / "h2.sock", uploads, Metrics())
    rest.start()
    try:
        src = tmp_path / "zeros.bin"
        offset = await HandoffClient(str(rest.path)).append(str(session.id), src, kept, size - kept)
    finally:
        await rest.stop()
    assert offset == size
    zeros = hashlib.sha256()
    for _ in range(size // MIB):
        zeros.update(bytes(MIB))
    blob = await uploads.finalize(session.id, sha256=Digest("sha256", zeros.digest()), actor="t")
    assert blob.size == size
