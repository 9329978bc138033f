"""Helpers shared by the handoff tests (``test_handoff.py``, ``test_handoff_ops.py``)."""

from __future__ import annotations

import json
import os
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["random_file", "raw_request"]


def random_file(tmp_path: Path, size: int, name: str = "src.bin") -> Path:
    """A new file of ``size`` random bytes."""
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def raw_request(path: str, message: bytes, fds: list[int]) -> dict[str, Any]:
    """Send ``message`` (with ``fds``) over a plain ``SOCK_SEQPACKET`` socket; decode the answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.settimeout(30)
        sock.connect(path)
        socket.send_fds(sock, [message], fds) if fds else sock.send(message)
        answer: dict[str, Any] = json.loads(sock.recv(65536))
        return answer
