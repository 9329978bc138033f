"""nginx as a real load balancer in front of real replicas, for end-to-end tests.

``Balancer`` renders the operators' configuration, ``deploy/nginx/artifactstore.conf``
(docs/OPERATOR.md "Running several replicas"), with the replicas' ports, wraps it in
a minimal ``nginx.conf`` whose pid, logs and temp paths all live in a test
directory, and runs ``nginx`` in the foreground (``daemon off``) on free
loopback ports. Its JSON access log (``requests``) tells which replica
served each request and how many bytes each request carried.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tests.e2e.serverproc import LoopbackPorts, answers_healthz, free_port

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tests.e2e.serverproc import Server

OPERATOR_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "artifactstore.conf"
STOP_TIMEOUT_SECONDS = 15.0
_PLACEHOLDER = re.compile(r"\$\{([A-Z0-9_]+)\}")


def nginx_or_skip() -> str:
    """The nginx binary; skips the test when it is not installed (``.ci/run`` installs it)."""
    found = shutil.which("nginx")
    if found is None:
        pytest.skip("nginx is not on PATH (Debian: apt-get install -y nginx; it is in /usr/sbin)")
    return found


def render(template: str, values: dict[str, str]) -> str:
    """Fill ``${NAME}`` placeholders (as ``envsubst`` would); nginx's own ``$vars`` stay."""

    def fill(match: re.Match[str]) -> str:
        return values[match.group(1)]  # a KeyError names a placeholder the test forgot

    return _PLACEHOLDER.sub(fill, template)


def _main_conf(directory: Path, include: Path) -> str:
    """A whole ``nginx.conf`` that keeps every file nginx writes inside ``directory``."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # else workers run as nobody
    temp = "".join(
        f"    {kind}_temp_path {directory / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}daemon off;\nworker_processes 1;\npid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'error.log'} info;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"{temp}"
        f"    include {include};\n"
        "}\n"
    )


@dataclass
class Balancer(LoopbackPorts):
    """One nginx process: a REST listener and an S3 listener, each over every replica."""

    directory: Path
    port: int
    s3_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def access_log(self) -> Path:
        """One JSON object per request (``log_format artifactstore``)."""
        return self.directory / "access.log"

    @classmethod
    def start(cls, nginx: str, directory: Path, replicas: Sequence[Server]) -> Balancer:
        """Render the operator's configuration for ``replicas`` and start nginx on it."""
        directory.mkdir(parents=True, exist_ok=True)
        balancer = cls(directory, free_port(), free_port())
        values = {"LISTEN_API": f"127.0.0.1:{balancer.port}"}
        values["LISTEN_S3"] = f"127.0.0.1:{balancer.s3_port}"
        values["ACCESS_LOG"] = str(balancer.access_log)
        for i, replica in enumerate(replicas, start=1):
            values[f"REPLICA{i}_API"] = f"127.0.0.1:{replica.port}"
            values[f"REPLICA{i}_S3"] = f"127.0.0.1:{replica.s3_port}"
        site = directory / "artifactstore.conf"
        site.write_text(render(OPERATOR_CONF.read_text(), values))
        conf = directory / "nginx.conf"
        conf.write_text(_main_conf(directory, site))
        check = subprocess.run(
            [nginx, "-t", "-q", "-p", str(directory), "-e", str(directory / "error.log"),
             "-c", str(conf)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert check.returncode == 0, check.stderr
        with (directory / "stderr.log").open("ab") as stderr:  # the child keeps its own
            balancer.process = subprocess.Popen(
                [nginx, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        balancer._wait_ready()
        return balancer

    def _wait_ready(self) -> None:
        """Wait until a replica's ``/healthz`` answers through nginx."""
        assert self.process is not None
        if answers_healthz(self.process, self.url, self.error_tail):
            return
        self.stop()
        msg = f"nginx did not answer /healthz:\n{self.error_tail()}"
        raise RuntimeError(msg)

    def stop(self) -> None:
        """Fast shutdown (SIGTERM), SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def requests(self) -> list[dict[str, Any]]:
        """Every request nginx has logged so far, oldest first."""
        try:
            lines = self.access_log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def error_tail(self, lines: int = 30) -> str:
        """The last lines of nginx's error log."""
        try:
            text = (self.directory / "error.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def receiving(replicas: Sequence[Server]) -> list[Server]:
    """The replicas with an open TCP connection on their REST port (a request in flight).

    The balancer keeps no idle connections to replicas, so an established
    connection to a replica's port is a request it is serving now. Read
    from ``/proc/net/tcp`` (state 01 = ESTABLISHED, local port in hex).
    """
    open_ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "01":
                    open_ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return [r for r in replicas if r.port in open_ports]
