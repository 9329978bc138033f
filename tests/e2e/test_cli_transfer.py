"""``artifactstore upload`` and ``download`` against the real server, as subprocesses."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import os
import re
import threading
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

import pytest
from tests.e2e.serverproc import Server, cli, free_port, tree_bytes

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.e2e


def _make_tree(root: Path) -> Path:
    """A tree with nesting, empty files, unicode names, duplicates and an inner symlink."""
    src = root / "dist"
    (src / "nested" / "deeper").mkdir(parents=True)
    (src / "ünïcødé dir").mkdir()
    (src / "a.txt").write_text("hello\n")
    (src / "empty").write_bytes(b"")
    (src / "nested" / "also-empty.bin").write_bytes(b"")
    (src / "nested" / "copy-of-a.txt").write_text("hello\n")
    (src / "nested" / "deeper" / "data.tar.gz").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (src / "ünïcødé dir" / "日本語.txt").write_text("こんにちは\n", encoding="utf-8")
    (src / "nested" / "link-to-a.txt").symlink_to("../a.txt")
    return src


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_tree_round_trips_byte_for_byte(server: Server, tmp_path: Path) -> None:
    """Nested dirs, empty files, unicode names, duplicates and symlinks download as uploaded."""
    src = _make_tree(tmp_path / "src")
    env = server.client_env()
    up = cli("upload", "demo", "1.0.0", str(src), "--json", "--chunk-size", "1MiB", env=env)
    assert up.returncode == 0, up.stderr
    summary = json.loads(up.stdout)
    assert summary["package"] == "demo"
    assert summary["version"] == "1.0.0"
    assert summary["files"] == 7
    # Four distinct contents: "hello\n" (three files), b"" (two), the tarball, the Japanese text.
    assert summary["uploaded"] == 4
    assert summary["skipped"] == 3
    assert summary["bytes_uploaded"] == 6 + 3 * 1024 * 1024 + 17 + len("こんにちは\n".encode())
    assert summary["manifest_sha256"].startswith("sha256:")

    out = tmp_path / "out"
    down = cli("download", "demo", "1.0.0", "--output", str(out), "--json", env=env)
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["manifest_sha256"] == summary["manifest_sha256"]
    expected = tree_bytes(src)
    assert tree_bytes(out / "dist") == expected
    assert not (out / "dist" / "nested" / "link-to-a.txt").is_symlink()
    assert not list(out.rglob("*.part"))


def test_download_defaults_to_package_version_directory(server: Server, tmp_path: Path) -> None:
    """Without --output the files land in ./PACKAGE-VERSION and stdout names that directory."""
    (tmp_path / "one.txt").write_text("one\n")
    env = server.client_env()
    assert cli("upload", "solo", "2", str(tmp_path / "one.txt"), env=env).returncode == 0
    work = tmp_path / "work"
    work.mkdir()
    down = cli("download", "solo", "2", env=env, cwd=work)
    assert down.returncode == 0, down.stderr
    assert (work / "solo-2" / "one.txt").read_text() == "one\n"
    assert down.stdout.strip() == str(work / "solo-2")


def test_a_server_on_this_machine_is_handed_the_files(server: Server, tmp_path: Path) -> None:
    """By default the file is handed over whole; ``--no-handoff`` PATCHes it in chunks.

    Handed over, it is one ``store`` op: the server hashes it, the client does not.
    """
    env = server.client_env()
    one, two = tmp_path / "one.bin", tmp_path / "two.bin"
    one.write_bytes(os.urandom(3 * 1024 * 1024))
    two.write_bytes(os.urandom(3 * 1024 * 1024))
    seen = len(server.log_path.read_text(errors="replace"))
    handed = cli("upload", "handed", "1", str(one), "--chunk-size", "1MiB", env=env)
    assert handed.returncode == 0, handed.stderr
    log = server.log_path.read_text(errors="replace")
    assert log[seen:].count('"method":"HANDOFF"') == 1
    assert '"method":"PATCH"' not in log[seen:]
    assert '"method":"POST","path":"/v1/uploads"' not in log[seen:]
    seen = len(log)
    patched = cli(
        "upload", "patched", "1", str(two), "--chunk-size", "1MiB", "--no-handoff", env=env
    )
    assert patched.returncode == 0, patched.stderr
    log = server.log_path.read_text(errors="replace")
    assert log[seen:].count('"method":"PATCH"') == 3
    assert '"method":"HANDOFF"' not in log[seen:]
    for name, path in (("handed", one), ("patched", two)):
        out = tmp_path / f"out-{name}"
        down = cli("download", name, "1", "--output", str(out), env=env)
        assert down.returncode == 0, down.stderr
        assert (out / path.name).read_bytes() == path.read_bytes()


@pytest.mark.parametrize("socket_state", ["missing", "another server's"])
def test_an_unusable_handoff_socket_falls_back_to_http(
    start_server: Callable[..., Server], tmp_path: Path, socket_state: str
) -> None:
    """The socket the server names is gone, or is another server's: the bytes go by PATCH."""
    server = start_server()
    named = server.data_dir / "handoff.sock"
    named.unlink()
    if socket_state == "another server's":
        other = start_server()
        named.hardlink_to(other.data_dir / "handoff.sock")
    src = tmp_path / "one.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024))
    env = server.client_env()
    up = cli("upload", "fallback", "1", str(src), "--chunk-size", "1MiB", env=env)
    assert up.returncode == 0, up.stderr
    log = server.log_path.read_text(errors="replace")
    assert log.count('"method":"PATCH"') == 3
    assert '"method":"HANDOFF"' not in log
    if socket_state == "another server's":
        other_log = other.log_path.read_text(errors="replace")
        assert re.search(r'"method":"HANDOFF".*"status":404', other_log), other.log_tail()
    out = tmp_path / "out"
    down = cli("download", "fallback", "1", "--output", str(out), env=env)
    assert down.returncode == 0, down.stderr
    assert (out / src.name).read_bytes() == src.read_bytes()


def test_reupload_is_a_noop_success(server: Server, tmp_path: Path) -> None:
    """Uploading the same tree again succeeds, sends nothing and prints the same digest."""
    src = _make_tree(tmp_path / "src")
    env = server.client_env()
    first = cli("upload", "demo", "1.0.0", str(src), env=env)
    assert first.returncode == 0, first.stderr
    again = cli("upload", "demo", "1.0.0", str(src), "--json", env=env)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["manifest_sha256"] == first.stdout.strip()
    assert summary["created"] is False
    assert summary["uploaded"] == 0
    assert summary["bytes_uploaded"] == 0


def test_conflicting_publish_exits_1_with_one_error_line(server: Server, tmp_path: Path) -> None:
    """Publishing other content under an existing version fails with exit 1 and one line."""
    src = tmp_path / "pkg"
    src.mkdir()
    (src / "f.txt").write_text("first\n")
    env = server.client_env()
    assert cli("upload", "demo", "1.0", str(src), env=env).returncode == 0
    (src / "f.txt").write_text("second\n")
    clash = cli("upload", "demo", "1.0", str(src), env=env)
    assert clash.returncode == 1
    assert clash.stdout == ""
    errors = _error_lines(clash.stderr)
    assert len(errors) == 1
    assert "already published with different content" in errors[0]
    assert "Traceback" not in clash.stderr


def test_download_detects_a_corrupted_blob_and_leaves_no_file(
    server: Server, tmp_path: Path
) -> None:
    """A stored blob altered on disk fails the download with exit 1; no bad file remains."""
    src = tmp_path / "pkg"
    src.mkdir()
    payload = os.urandom(256 * 1024)
    (src / "good.txt").write_text("fine\n")
    (src / "victim.bin").write_bytes(payload)
    env = server.client_env()
    assert cli("upload", "demo", "1.0", str(src), env=env).returncode == 0
    digest = hashlib.sha256(payload).hexdigest()
    stored = list((server.data_dir / "blobs").rglob(digest))
    assert len(stored) == 1
    assert stored[0].parent.parent.name == digest[:2]
    stored[0].chmod(0o644)
    corrupted = bytearray(payload)
    corrupted[1000] ^= 0xFF
    stored[0].write_bytes(bytes(corrupted))

    out = tmp_path / "out"
    down = cli("download", "demo", "1.0", "--output", str(out), "--concurrency", "1", env=env)
    assert down.returncode == 1, down.stderr
    errors = _error_lines(down.stderr)
    assert len(errors) == 1
    assert "pkg/victim.bin" in errors[0]
    assert "sha256" in errors[0]
    assert not (out / "pkg" / "victim.bin").exists()
    assert not [p for p in out.rglob("*") if p.is_file() and p.name != "good.txt"]


def test_symlink_out_of_the_tree_is_refused(server: Server, tmp_path: Path) -> None:
    """A symlink pointing outside the uploaded directory stops the upload with exit 2."""
    secret = tmp_path / "secret.txt"
    secret.write_text("do not publish\n")
    src = tmp_path / "pkg"
    src.mkdir()
    (src / "ok.txt").write_text("ok\n")
    (src / "escape.txt").symlink_to(secret)
    env = server.client_env()
    up = cli("upload", "demo", "1.0", str(src), env=env)
    assert up.returncode == 2
    assert "points outside" in up.stderr
    assert "escape.txt" in up.stderr
    listing = cli("ls", "--json", env=env)
    assert json.loads(listing.stdout) == {"packages": []}


def test_special_file_is_refused_not_skipped(server: Server, tmp_path: Path) -> None:
    """A FIFO inside the tree is an error naming it, never silently left out."""
    src = tmp_path / "pkg"
    src.mkdir()
    (src / "ok.txt").write_text("ok\n")
    os.mkfifo(src / "pipe")
    up = cli("upload", "demo", "1.0", str(src), env=server.client_env())
    assert up.returncode == 2
    assert "pipe" in up.stderr
    assert "FIFO" in up.stderr


def test_missing_version_is_a_usage_error(server: Server, tmp_path: Path) -> None:
    """Downloading a version that does not exist exits 2 and writes nothing."""
    out = tmp_path / "out"
    down = cli("download", "nothing", "9.9", "--output", str(out), env=server.client_env())
    assert down.returncode == 2
    assert len(_error_lines(down.stderr)) == 1
    assert not out.exists()


def test_bad_arguments_exit_2(server: Server, tmp_path: Path) -> None:
    """Invalid names, bad options and missing paths are usage errors (exit 2)."""
    env = server.client_env()
    (tmp_path / "f").write_text("x")
    assert cli("upload", "Bad_Name", "1", str(tmp_path / "f"), env=env).returncode == 2
    assert cli("upload", "ok", "1", str(tmp_path / "absent"), env=env).returncode == 2
    chunk = cli("upload", "ok", "1", str(tmp_path / "f"), "--chunk-size", "lots", env=env)
    assert chunk.returncode == 2
    assert "--chunk-size" in chunk.stderr
    assert cli("upload", "ok", env=env).returncode == 2


def test_unreachable_server_exits_3(tmp_path: Path) -> None:
    """With nothing listening, upload, download and ls fail fast with exit 3."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTSTORE_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["ARTIFACTSTORE_SERVER"] = f"http://127.0.0.1:{free_port()}"
    env["ARTIFACTSTORE_TOKEN"] = "ast_unused"
    (tmp_path / "f").write_text("x")
    for args in (
        ("upload", "p", "1", str(tmp_path / "f")),
        ("download", "p", "1", "--output", str(tmp_path / "out")),
        ("ls",),
    ):
        result = cli(*args, env=env)
        assert result.returncode == 3, (args, result.stderr)
        assert _error_lines(result.stderr)[0].startswith("error: cannot reach the server")


class _ForwardingProxy(http.server.BaseHTTPRequestHandler):
    """A plain-HTTP forward proxy (absolute-form targets, Content-Length bodies) that counts."""

    seen: ClassVar[list[str]] = []

    def _forward(self) -> None:
        target = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() != "proxy-connection"}
        upstream = http.client.HTTPConnection(target.hostname or "", target.port, timeout=60)
        path = target.path + (f"?{target.query}" if target.query else "")
        upstream.request(self.command, path, body=body, headers=headers)
        answer = upstream.getresponse()
        data = answer.read()
        self.seen.append(f"{self.command} {target.path}")
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in {"transfer-encoding", "connection", "content-length"}:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        upstream.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward  # noqa: N815 - http.server names

    def log_message(self, *_args: object) -> None:
        """Quiet."""


def test_upload_through_an_http_proxy(server: Server, tmp_path: Path) -> None:
    """With HTTP_PROXY set, every request (file bodies too) goes through the proxy."""
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ForwardingProxy)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    _ForwardingProxy.seen.clear()
    try:
        src = tmp_path / "payload.bin"
        src.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
        env = {
            **server.client_env(),
            "HTTP_PROXY": f"http://127.0.0.1:{proxy.server_address[1]}",
            "NO_PROXY": "",
            "no_proxy": "",
        }
        up = cli("upload", "proxied", "1", str(src), "--chunk-size", "1MiB", env=env)
        assert up.returncode == 0, up.stderr
    finally:
        proxy.shutdown()
        proxy.server_close()
    patches = [line for line in _ForwardingProxy.seen if line.startswith("PATCH ")]
    assert len(patches) == 4  # 3 MiB + 5 bytes in 1 MiB PATCHes, all via the proxy
    out = tmp_path / "out"
    down = cli("download", "proxied", "1", "--output", str(out), env=server.client_env())
    assert down.returncode == 0, down.stderr
    assert (out / "payload.bin").read_bytes() == src.read_bytes()
