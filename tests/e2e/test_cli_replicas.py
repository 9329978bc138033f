"""The CLI when the replica it talks to dies: it gives up, resumes elsewhere, starts over cleanly.

Real ``artifactstore serve`` processes on one database (DESIGN section 13),
the real CLI, and a real ``kill -9`` of a server in the middle of an upload
(issue 13 item 4). Replicas store into the ``postgres`` backend (no
``local`` target), so their sessions stage in the shared database and any
replica continues them; a re-run through another replica's URL must resume
the same session (fewer bytes sent than the file), because sessions belong
to the deployment, not to the URL they were opened through.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

import httpx
import pytest
from tests.e2e.serverproc import Server, cli

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SIZE = 100 * 1024 * 1024
CHUNK = "4MiB"
DEADLINE_SECONDS = 120.0
EXIT_UNAVAILABLE = 3  # docs: the server is unreachable
UPLOAD_FLAGS = ("--no-handoff", "--chunk-size", CHUNK, "--concurrency", "1", "--json")


def _replicas(start_server: Callable[..., Server], tmp_path: Path) -> tuple[Server, Server]:
    """Two replicas, each with its own data dir, on one database holding the blobs too."""
    config = tmp_path / "replicas.toml"
    config.write_text('[storage]\ndefault = "db"\n\n[storage.backends.db]\ntype = "postgres"\n')
    return start_server(config=config), start_server(config=config)


def _big_file(tmp_path: Path) -> Path:
    src = tmp_path / "big.bin"
    with src.open("wb") as fh:
        for _ in range(SIZE // (4 << 20)):
            fh.write(os.urandom(4 << 20))
    return src


def _patches(server: Server) -> int:
    return server.log_path.read_text(errors="replace").count('"method":"PATCH"')


def _upload(src: Path, env: dict[str, str], *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "artifactstore.cli", "upload", "big", "1", str(src),
         *UPLOAD_FLAGS, *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _remembered(tmp_path: Path) -> list[str]:
    """Session ids in the CLI's session cache (``XDG_CACHE_HOME`` of ``base_env``)."""
    ids: list[str] = []
    for file in (tmp_path / "cache" / "artifactstore" / "uploads").glob("*.json"):
        data = json.loads(file.read_text())
        ids += [r["session"] for r in data.get("sessions", [data])]  # or one record (0.x)
    return ids


def _killed_mid_upload(server: Server, src: Path, env: dict[str, str]) -> tuple[int, str]:
    """Upload through ``env``'s URL, kill -9 ``server`` after 3 PATCHes; the CLI's code, stderr."""
    run = _upload(src, env, "--retry-seconds", "5")
    server.wait_until("3 PATCHes", lambda: _patches(server) >= 3, DEADLINE_SECONDS)
    server.kill()
    _out, err = run.communicate(timeout=300)  # bounded: it must give up by itself
    return run.returncode, err


def _downloads_exact(server: Server, src: Path, out: Path) -> None:
    down = cli("download", "big", "1", "--output", str(out), env=server.client_env())
    assert down.returncode == 0, down.stderr
    assert (out / "big.bin").read_bytes() == src.read_bytes()


def test_cli_gives_up_on_a_dead_server_and_a_rerun_resumes(server: Server, tmp_path: Path) -> None:
    """Killed mid-upload: exit 3 with a resume hint, the session kept; the re-run sends the rest."""
    src = _big_file(tmp_path)
    code, err = _killed_mid_upload(server, src, server.client_env())
    assert code == EXIT_UNAVAILABLE, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: cannot reach the server"), err
    assert "gave up after" in last, err
    assert "run the same command again" in last, err
    assert len(_remembered(tmp_path)) == 1

    server.start()
    again = cli("upload", "big", "1", str(src), *UPLOAD_FLAGS, env=server.client_env())
    assert again.returncode == 0, again.stderr
    assert 0 < json.loads(again.stdout)["bytes_uploaded"] < SIZE
    assert _remembered(tmp_path) == []
    _downloads_exact(server, src, tmp_path / "out")


def test_a_rerun_through_another_url_of_the_deployment_resumes(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """Replica A dies mid-upload; the same command through replica B's URL resumes A's session."""
    first, second = _replicas(start_server, tmp_path)
    src = _big_file(tmp_path)
    code, err = _killed_mid_upload(first, src, first.client_env())
    assert code == EXIT_UNAVAILABLE, err
    remembered = _remembered(tmp_path)
    assert len(remembered) == 1

    again = cli("upload", "big", "1", str(src), *UPLOAD_FLAGS, env=second.client_env())
    assert again.returncode == 0, again.stderr
    assert 0 < json.loads(again.stdout)["bytes_uploaded"] < SIZE
    assert f"/v1/uploads/{remembered[0]}" in second.log_path.read_text()
    assert _remembered(tmp_path) == []
    _downloads_exact(second, src, tmp_path / "out")


def test_a_session_aborted_between_runs_starts_over_with_a_notice(
    server: Server, tmp_path: Path
) -> None:
    """The remembered session was aborted by REST: a new one, one notice, the record dropped."""
    src = _big_file(tmp_path)
    env = server.client_env()
    run = _upload(src, env)
    server.wait_until("2 PATCHes", lambda: _patches(server) >= 2, DEADLINE_SECONDS)
    run.send_signal(signal.SIGKILL)  # the user's machine went away: the record stays
    run.communicate(timeout=60)
    (stale,) = _remembered(tmp_path)
    headers = {"Authorization": f"Bearer {env['ARTIFACTSTORE_TOKEN']}"}
    gone = httpx.delete(f"{server.url}/v1/uploads/{stale}", headers=headers, timeout=30)
    assert gone.status_code == 204, gone.text

    again = cli("upload", "big", "1", str(src), *UPLOAD_FLAGS, env=env)
    assert again.returncode == 0, again.stderr
    notices = [line for line in again.stderr.splitlines() if stale in line]
    assert len(notices) == 1, again.stderr
    assert "is gone" in notices[0]
    assert "starting a new one" in notices[0]
    assert json.loads(again.stdout)["bytes_uploaded"] == SIZE
    assert _remembered(tmp_path) == []
    _downloads_exact(server, src, tmp_path / "out")


class _TcpBalancer:
    """TCP (layer 4) balancing to the first upstream that accepts a connection.

    What a client sees of a replica killed behind it: its connections reset,
    and new ones go to the replicas left (HAProxy ``mode tcp`` with a backup
    server). Every connection goes to the first replica while it lives, so
    the kill is sure to cut an upload in flight.
    """

    def __init__(self, upstreams: list[int]) -> None:
        self.upstreams = upstreams
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _connect(self) -> socket.socket | None:
        for port in self.upstreams:
            try:
                return socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                continue
        return None

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = self._connect()
            if upstream is None:
                client.close()
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 20):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):  # one side gone: drop both, as a balancer does
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def balancer_of() -> Iterator[Callable[[list[Server]], _TcpBalancer]]:
    """A ``_TcpBalancer`` over servers, closed at teardown."""
    made: list[_TcpBalancer] = []

    def make(servers: list[Server]) -> _TcpBalancer:
        made.append(_TcpBalancer([s.port for s in servers]))
        return made[-1]

    yield make
    for balancer in made:
        balancer.close()


def test_a_replica_killed_behind_a_balancer_the_upload_continues_on_another(
    start_server: Callable[..., Server],
    balancer_of: Callable[[list[Server]], _TcpBalancer],
    tmp_path: Path,
) -> None:
    """One CLI run through the balancer: the reset connection is retried, HEAD re-syncs, done."""
    first, second = _replicas(start_server, tmp_path)
    balancer = balancer_of([first, second])
    src = _big_file(tmp_path)
    env = {**first.client_env(), "ARTIFACTSTORE_SERVER": f"http://127.0.0.1:{balancer.port}"}
    run = _upload(src, env)
    first.wait_until("3 PATCHes", lambda: _patches(first) >= 3, DEADLINE_SECONDS)
    first.kill()
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert "retrying in" in err  # the kill cut a request
    assert json.loads(out)["uploaded"] == 1
    logs = first.log_path.read_text() + second.log_path.read_text()
    assert len(re.findall(r'"method":"POST"[^\n]*"/v1/uploads"', logs)) == 1, logs[-4000:]
    assert _patches(second) > 0  # the same session went on on the other replica
    _downloads_exact(second, src, tmp_path / "out")


def test_a_session_of_one_deployment_is_never_sent_to_another(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """A session remembered from deployment A is not offered to B (another database).

    Every answer names its deployment (``Artifactstore-Deployment``, one id per
    database): two replicas of A name the same one, B another, and the CLI's
    re-run against B starts a new session without asking B about A's.
    """
    first, second = _replicas(start_server, tmp_path)
    ids = {
        httpx.get(f"{s.url}/healthz").headers["artifactstore-deployment"] for s in (first, second)
    }
    other = start_server(embedded=True)
    foreign = httpx.get(f"{other.url}/healthz").headers["artifactstore-deployment"]
    assert len(ids) == 1
    assert foreign not in ids
    assert re.fullmatch(r"[0-9a-f]{32}", foreign)

    src = _big_file(tmp_path)
    code, err = _killed_mid_upload(first, src, first.client_env())
    assert code == EXIT_UNAVAILABLE, err
    [session] = _remembered(tmp_path)
    env = {**other.client_env(), "XDG_CACHE_HOME": first.client_env()["XDG_CACHE_HOME"]}
    again = cli("upload", "big", "1", str(src), *UPLOAD_FLAGS, env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["bytes_uploaded"] == SIZE
    assert session not in other.log_path.read_text(errors="replace")
    assert _remembered(tmp_path) == [session]  # still A's, for a re-run against A
