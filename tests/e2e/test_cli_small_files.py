"""``artifactstore upload`` of small files in one request each, against real servers.

Small files (at most ``client.blobs.SMALL_FILE_BYTES``) go as ``POST
/v1/blobs``, larger ones through sessions, and what the server holds is
asked with ``POST /v1/blobs/exists``. The fallbacks run against real
servers too: one configured with a small ``max_inline_bytes`` (413), and a
real reverse proxy in this process that answers 404 for the new routes, as
a server from before them would.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import threading
from typing import TYPE_CHECKING, ClassVar

import pytest
from tests.e2e.serverproc import Server, cli, tree_bytes

from artifactstore.client.blobs import SMALL_FILE_BYTES

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = pytest.mark.e2e


def _make_tree(root: Path) -> Path:
    """Small files (one empty, two equal, one exactly at the limit) and two just past it."""
    src = root / "pkg"
    (src / "small").mkdir(parents=True)
    (src / "big").mkdir()
    for i in range(20):
        (src / "small" / f"f{i:02d}.bin").write_bytes(os.urandom(4096))
    (src / "small" / "empty").write_bytes(b"")
    (src / "small" / "same-1.txt").write_text("same\n")
    (src / "small" / "same-2.txt").write_text("same\n")
    (src / "small" / "at-limit.bin").write_bytes(os.urandom(SMALL_FILE_BYTES))
    (src / "big" / "over-limit.bin").write_bytes(os.urandom(SMALL_FILE_BYTES + 1))
    (src / "big" / "large.bin").write_bytes(os.urandom(3 * SMALL_FILE_BYTES + 5))
    return src


def _requests(log: str, method: str, path: str, status: int | None = None) -> int:
    """How many access-log lines name this method and path (and status, if given)."""
    count = 0
    for line in log.splitlines():
        if "artifactstore.access" not in line:
            continue
        entry = json.loads(line.split("artifactstore.access ", 1)[1])
        if (entry["method"], entry["path"]) == (method, path) and status in {None, entry["status"]}:
            count += 1
    return count


def _download_matches(server: Server, tmp_path: Path, name: str, src: Path) -> None:
    out = tmp_path / f"out-{name}"
    down = cli("download", name, "1", "--output", str(out), env=server.client_env())
    assert down.returncode == 0, down.stderr
    assert tree_bytes(out / src.name) == tree_bytes(src)


@pytest.mark.parametrize("handoff", [False, True], ids=["http", "handoff"])
def test_small_files_go_in_one_request_large_ones_by_session(
    server: Server, tmp_path: Path, handoff: bool
) -> None:
    """Small files are one POST /v1/blobs each, larger ones sessions or handoff stores.

    Over HTTP the larger files take sessions; to the server on this machine,
    one handoff store each. All download byte-exact.
    """
    src = _make_tree(tmp_path / "src")
    env = server.client_env()
    flags = [] if handoff else ["--no-handoff"]
    up = cli("upload", "mixed", "1", str(src), "--json", *flags, env=env)
    assert up.returncode == 0, up.stderr
    summary = json.loads(up.stdout)
    assert (summary["files"], summary["uploaded"], summary["skipped"]) == (26, 25, 1)
    log = server.log_path.read_text(errors="replace")
    assert _requests(log, "POST", "/v1/blobs/exists", 200) == 1
    assert _requests(log, "POST", "/v1/blobs", 201) == 23  # 20 random, empty, "same", at-limit
    assert _requests(log, "POST", "/v1/uploads", 201) == (0 if handoff else 2)
    assert log.count('"method":"HANDOFF"') == (2 if handoff else 0)
    _download_matches(server, tmp_path, "mixed", src)
    again = cli("upload", "mixed", "1", str(src), "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["uploaded"] == 0
    assert _requests(server.log_path.read_text(errors="replace"), "POST", "/v1/blobs") == 23


def test_held_blobs_are_learnt_in_one_request(server: Server, tmp_path: Path) -> None:
    """A new version of a tree the server holds asks once and sends no blob at all."""
    src = _make_tree(tmp_path / "src")
    env = server.client_env()
    assert cli("upload", "first", "1", str(src), env=env).returncode == 0
    seen = len(server.log_path.read_text(errors="replace"))
    second = cli("upload", "second", "1", str(src), "--json", env=env)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["uploaded"] == 0
    log = server.log_path.read_text(errors="replace")[seen:]
    assert _requests(log, "POST", "/v1/blobs/exists", 200) == 1
    assert _requests(log, "POST", "/v1/blobs") == 0
    assert _requests(log, "POST", "/v1/uploads") == 0
    _download_matches(server, tmp_path, "second", src)


def test_a_server_refusing_the_size_gets_sessions(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """A server whose max_inline_bytes is below a file answers 413; that file goes by session."""
    config = tmp_path / "server.toml"
    config.write_text("[uploads]\nmax_inline_bytes = 1000\n")
    server = start_server(config=config)
    src = tmp_path / "src" / "pkg"
    src.mkdir(parents=True)
    (src / "tiny.txt").write_bytes(os.urandom(500))
    for i in range(6):
        (src / f"f{i}.bin").write_bytes(os.urandom(2000))
    env = server.client_env()
    up = cli("upload", "refused", "1", str(src), "--json", "--concurrency", "1", env=env)
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["uploaded"] == 7
    log = server.log_path.read_text(errors="replace")
    assert _requests(log, "POST", "/v1/blobs", 201) == 1
    assert _requests(log, "POST", "/v1/blobs", 413) == 1
    assert _requests(log, "POST", "/v1/uploads", 201) == 6
    _download_matches(server, tmp_path, "refused", src)


class _OldServer(http.server.BaseHTTPRequestHandler):
    """A reverse proxy to a real server, 404 for the ``missing`` routes as older servers."""

    upstream: ClassVar[tuple[str, int]] = ("127.0.0.1", 0)
    missing: ClassVar[frozenset[str]] = frozenset()
    seen: ClassVar[list[str]] = []
    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        path = self.path.split("?", 1)[0]
        self.seen.append(f"{self.command} {path}")
        older = path == "/v1/uploads/handoff"  # newer than both routes too
        if older or (self.command == "POST" and path in self.missing):
            self._answer(404, [("Content-Type", "application/json")], b'{"detail":"Not Found"}')
            return
        upstream = http.client.HTTPConnection(*self.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        upstream.request(self.command, self.path, body=body, headers=headers)
        answer = upstream.getresponse()
        data = answer.read()
        upstream.close()
        kept = [
            (k, v)
            for k, v in answer.getheaders()
            if k.lower() not in {"transfer-encoding", "connection", "content-length"}
        ]
        self._answer(answer.status, kept, b"" if self.command == "HEAD" else data)

    def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward  # noqa: N815 - http.server names

    def log_message(self, *_args: object) -> None:
        """Quiet."""


@pytest.fixture
def old_server(server: Server) -> Iterator[Callable[[frozenset[str]], str]]:
    """Start a proxy to ``server`` without the given routes; returns its URL."""
    proxies: list[http.server.ThreadingHTTPServer] = []
    _OldServer.upstream = ("127.0.0.1", server.port)
    _OldServer.seen.clear()

    def start(missing: frozenset[str]) -> str:
        _OldServer.missing = missing
        proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OldServer)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        proxies.append(proxy)
        return f"http://127.0.0.1:{proxy.server_address[1]}"

    yield start
    for proxy in proxies:
        proxy.shutdown()
        proxy.server_close()


@pytest.mark.parametrize(
    "missing",
    [frozenset({"/v1/blobs", "/v1/blobs/exists"}), frozenset({"/v1/blobs"})],
    ids=["both-routes", "post-only"],
)
def test_a_server_without_the_routes_gets_sessions(
    server: Server,
    old_server: Callable[[frozenset[str]], str],
    tmp_path: Path,
    missing: frozenset[str],
) -> None:
    """Where POST /v1/blobs (and /exists) answer 404, every file goes through a session."""
    src = _make_tree(tmp_path / "src")
    env = {**server.client_env(), "ARTIFACTSTORE_SERVER": old_server(missing)}
    up = cli("upload", "legacy", "1", str(src), "--json", "--concurrency", "1", env=env)
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["uploaded"] == 25
    assert _OldServer.seen.count("POST /v1/uploads") == 25
    # Turned off by the first 404: of exists when it is missing, else of the first POST.
    assert _OldServer.seen.count("POST /v1/blobs") == (0 if len(missing) == 2 else 1)
    assert _OldServer.seen.count("POST /v1/blobs/exists") == 1
    _download_matches(server, tmp_path, "legacy", src)
