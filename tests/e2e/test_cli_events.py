"""``artifactstore events tail`` against the real server: history and the live SSE stream."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any

import pytest
from tests.e2e.serverproc import Server, cli

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.e2e

FOLLOW_DEADLINE_SECONDS = 120.0  # a hang guard, not a timing assertion


def _upload(server: Server, tmp_path: Path, version: str) -> None:
    path = tmp_path / f"file-{version}.txt"
    path.write_text(f"content {version}\n")
    up = cli("upload", "demo", version, str(path), env=server.client_env())
    assert up.returncode == 0, up.stderr


def test_tail_prints_history(server: Server, tmp_path: Path) -> None:
    """The last events print by default; --after and --json select and shape them."""
    _upload(server, tmp_path, "1")
    _upload(server, tmp_path, "2")
    env = server.client_env()
    everything = cli("events", "tail", "--json", "--after", "0", env=env)
    assert everything.returncode == 0, everything.stderr
    items = [json.loads(line) for line in everything.stdout.splitlines()]
    seqs = [item["seq"] for item in items]
    assert seqs == list(range(1, len(seqs) + 1))
    published = [i for i in items if i["type"] == "v1.package.published"]
    assert [p["payload"]["version"] for p in published] == ["1", "2"]

    last_two = cli("events", "tail", "-n", "2", env=env)
    assert last_two.returncode == 0, last_two.stderr
    lines = last_two.stdout.splitlines()
    assert len(lines) == 2
    assert lines[-1].split()[0] == str(seqs[-1])
    assert "v1.package.published" in lines[-1]

    after = cli("events", "tail", "--json", "--after", str(seqs[-2]), env=env)
    assert [json.loads(line)["seq"] for line in after.stdout.splitlines()] == [seqs[-1]]


def test_tail_follow_streams_new_events(server: Server, tmp_path: Path) -> None:
    """With --follow, events appended after the history was printed arrive from the stream."""
    _upload(server, tmp_path, "1")
    env = server.client_env()
    head = json.loads(cli("events", "tail", "--json", "-n", "1", env=env).stdout)["seq"]
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "artifactstore.cli",
            "events",
            "tail",
            "--follow",
            "--json",
            "--after",
            str(head - 1),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        # A reader thread: select() on a buffered pipe misses lines already buffered.
        for line in follower.stdout or ():
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:

        def next_event() -> dict[str, Any]:
            try:
                line = lines.get(timeout=FOLLOW_DEADLINE_SECONDS)
            except queue.Empty:
                pytest.fail(f"no event arrived; follower exited with {follower.poll()}")
            event: dict[str, Any] = json.loads(line)
            return event

        assert next_event()["seq"] == head  # the history part is done
        _upload(server, tmp_path, "2")
        streamed = [next_event()]
        while streamed[-1]["type"] != "v1.package.published":
            streamed.append(next_event())
        assert [e["seq"] for e in streamed] == list(range(head + 1, head + 1 + len(streamed)))
        assert streamed[-1]["payload"]["version"] == "2"
    finally:
        follower.terminate()
        follower.communicate(timeout=30)  # reaps it and closes both pipes
        reader.join(timeout=30)
