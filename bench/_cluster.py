"""Several replicas for a benchmark: one PostgreSQL, one S3 endpoint, nginx in front, CPU by role.

``bench_replicas.py`` runs the deployment of DESIGN section 13 on this one
machine: a PostgreSQL 15 cluster of its own (durable settings, as a real
external server keeps them), moto's S3 server (or an endpoint given), N
``artifactstore serve`` processes with their own data dirs on one database
and the S3 backend as the only target, and nginx (Debian's) round-robin
over them with no affinity. ``CpuMeter`` reads ``/proc`` so each role's CPU
seconds over a measurement can be compared. This module starts and stops
processes and says nothing about the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from _clients import cpu_ticks
from _common import free_port, server_env, start_nginx, start_server, stop_process, wait_http
from artifactstore.db.embedded import INGEST_SETTINGS, start_throwaway_cluster

if TYPE_CHECKING:
    from collections.abc import Callable

PG15_BINDIR = Path("/usr/lib/postgresql/15/bin")
# The embedded cluster's throughput settings, durability untouched, and room
# for every replica's pool.
PG_SETTINGS = {**INGEST_SETTINGS, "max_connections": "300"}
KEY_ENV, SECRET_ENV = "BENCH_S3_ACCESS_KEY", "BENCH_S3_SECRET_KEY"


def cli(*args: str, env: dict[str, str]) -> str:
    """Run the real CLI (``python -m artifactstore.cli``); its stdout, or raise with its stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "artifactstore.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"artifactstore {' '.join(args[:2])}: {done.stderr[-2000:]}")
    return done.stdout


def postmaster_pid(pgdata: Path) -> int:
    """The pid in ``pgdata/postmaster.pid``: the cluster's root process."""
    return int((pgdata / "postmaster.pid").read_text(encoding="ascii").split()[0])


@dataclass
class Postgres:
    """One PostgreSQL cluster every replica of a phase shares."""

    admin_url: str
    pgdata: Path
    stop: Callable[[], None]
    bindir: str

    def postmaster_pid(self) -> int:
        """The postmaster's pid (its backends are its children)."""
        return postmaster_pid(self.pgdata)

    def create_database(self, name: str) -> str:
        """A new empty database ``name``; its SQLAlchemy URL."""

        async def create() -> None:
            engine = create_async_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            try:
                async with engine.connect() as conn:
                    await conn.execute(text(f'CREATE DATABASE "{name}"'))
            finally:
                await engine.dispose()

        asyncio.run(create())
        return self.admin_url.replace("/postgres?", f"/{name}?", 1)


def start_postgres(root: Path) -> Postgres:
    """A cluster in ``root`` from the PostgreSQL 15 binaries (else whatever ``initdb`` is found)."""
    bindir = PG15_BINDIR if (PG15_BINDIR / "postgres").exists() else None
    url, stop = start_throwaway_cluster(root, bindir=bindir, settings=PG_SETTINGS)
    return Postgres(url, root.resolve() / "data", stop, str(bindir or "pgserver/PATH"))


@dataclass(frozen=True)
class S3Endpoint:
    """Where the replicas' S3 backend points (moto or a real RGW) and its bucket."""

    url: str
    access_key: str
    secret_key: str
    bucket: str
    region: str = "us-east-1"

    def ensure_bucket(self) -> None:
        """Create the bucket unless it is there."""
        import boto3  # noqa: PLC0415 - only here

        client = boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )
        try:
            client.head_bucket(Bucket=self.bucket)
        except client.exceptions.ClientError:
            client.create_bucket(Bucket=self.bucket)

    def config(self, path: Path, key_prefix: str) -> dict[str, str]:
        """Write a server config whose only backend (the default) is this bucket; its env."""
        path.write_text(
            '[storage]\ndefault = "objects"\n\n[storage.backends.objects]\ntype = "s3"\n'
            f'endpoint_url = "{self.url}"\nregion = "{self.region}"\nbucket = "{self.bucket}"\n'
            f'key_prefix = "{key_prefix}"\naccess_key_ref = "env:{KEY_ENV}"\n'
            f'secret_key_ref = "env:{SECRET_ENV}"\n',
            encoding="utf-8",
        )
        return {KEY_ENV: self.access_key, SECRET_ENV: self.secret_key}


def start_moto(log: IO[bytes]) -> tuple[subprocess.Popen[bytes], S3Endpoint]:
    """Moto's S3 server (a subprocess) on a free port, with a bucket."""
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    endpoint = S3Endpoint(f"http://127.0.0.1:{port}", "bench", "bench", "bench-replicas")
    wait_http(f"{endpoint.url}/", proc, timeout=60, any_status=True)
    endpoint.ensure_bucket()
    return proc, endpoint


def start_lb(
    work: Path, upstreams: list[str], static_root: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """Nginx round-robin over ``upstreams`` (no affinity), ``/static/`` from ``static_root``.

    Bodies stream both ways (no request or response buffering, no size
    limit) and upstream connections are kept alive. Returns nginx and its URL.
    """
    port = free_port()
    servers = "".join(f"    server {u.removeprefix('http://')};\n" for u in upstreams)
    http = f"""  sendfile on;
  upstream replicas {{
{servers}    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 0;
    location /static/ {{ alias {static_root}/; }}
    location / {{
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_read_timeout 600s;
      proxy_send_timeout 600s;
    }}
  }}"""
    url = f"http://127.0.0.1:{port}"
    return start_nginx(work, http, f"{url}/static/"), url


@dataclass
class Replicas:
    """N ``artifactstore serve`` processes on one database, one config, data dirs of their own."""

    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    token: str = ""

    def stop(self) -> None:
        """SIGTERM each (they drain), SIGKILL after 60 s."""
        for p in self.processes:
            stop_process(p, 60)


def start_replicas(
    n: int,
    work: Path,
    *,
    database_url: str,
    config: Path,
    extra_env: dict[str, str],
    log: IO[bytes],
) -> Replicas:
    """Migrate ``database_url``, start ``n`` replicas on it, create an admin token."""
    env = {
        **server_env(),
        **extra_env,
        "ARTIFACTSTORE_DATABASE_URL": database_url,
        "ARTIFACTSTORE_CONFIG": str(config),
    }
    cli("db", "upgrade", env=env)
    replicas = Replicas()
    for i in range(n):
        data_dir = work / f"replica{i}-{uuid.uuid4().hex[:6]}"
        data_dir.mkdir(parents=True)
        process, api, _ = start_server(data_dir, env, log=log)
        replicas.processes.append(process)
        replicas.urls.append(api)
    for process, api in zip(replicas.processes, replicas.urls, strict=True):
        wait_http(f"{api}/readyz", process)
    made = cli("token", "create", "--name", f"bench-{uuid.uuid4().hex[:8]}", "--scope", "admin",
               "--json", env=env)  # fmt: skip
    replicas.token = json.loads(made)["token"]
    return replicas


# -------------------------------------------------------------- CPU by role


@dataclass(frozen=True)
class _Proc:
    ppid: int
    ticks: int  # utime + stime + cutime + cstime: its own CPU and its reaped children's
    name: str


def _snapshot() -> dict[int, _Proc]:
    """Every process's CPU ticks now (``/proc/<pid>/stat``)."""
    procs = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        name, _, rest = text.partition(" (")[2].rpartition(")")
        fields = rest.split()
        procs[int(entry.name)] = _Proc(int(fields[1]), sum(int(x) for x in fields[11:15]), name)
    return procs


def _owners(procs: dict[int, _Proc], roles: dict[str, list[int]]) -> dict[int, str]:
    """The role of each process: the first role (in order) whose roots it descends from."""
    children: dict[int, list[int]] = {}
    for pid, proc in procs.items():
        children.setdefault(proc.ppid, []).append(pid)
    owner: dict[int, str] = {}
    for role, roots in roles.items():
        todo = list(roots)
        while todo:
            pid = todo.pop()
            if pid in procs and pid not in owner:
                owner[pid] = role
                todo += children.get(pid, [])
    return owner


@dataclass
class CpuMeter:
    """CPU seconds by role between ``start`` and ``stop``, from ``/proc``.

    A role is the process trees under some pids, claimed in order (so a
    later role such as this benchmark's own tree takes only what is left);
    every other process's CPU goes to ``other`` (its biggest users named in
    ``others``), and the machine's busy time no process accounts for
    (interrupts, mostly loopback networking) to ``kernel``. A process that
    exits inside the window is counted with its parent once reaped.
    """

    roles: dict[str, list[int]]
    used: dict[str, float] = field(default_factory=dict)
    others: list[tuple[str, float]] = field(default_factory=list)
    _before: dict[int, _Proc] = field(default_factory=dict)
    _busy: int = 0

    def start(self) -> None:
        """Read every process's counters and the machine's."""
        self._busy = cpu_ticks()[0]
        self._before = _snapshot()

    def stop(self) -> None:
        """Read them again; ``used`` holds the seconds by role, then other and kernel."""
        after = _snapshot()
        busy = cpu_ticks()[0] - self._busy
        owner = _owners(after, self.roles)
        ticks = dict.fromkeys([*self.roles, "other"], 0)
        by_name: dict[str, int] = {}
        for pid, proc in after.items():
            before = self._before.get(pid)
            delta = proc.ticks - (before.ticks if before is not None else 0)
            role = owner.get(pid, "other")
            ticks[role] += delta
            if role == "other":
                by_name[proc.name] = by_name.get(proc.name, 0) + delta
        hz = os.sysconf("SC_CLK_TCK")
        ticks["kernel"] = max(0, busy - sum(ticks.values()))
        self.used = {role: t / hz for role, t in ticks.items()}
        top = sorted(by_name.items(), key=lambda kv: -kv[1])[:3]
        self.others = [(name, t / hz) for name, t in top if t > 0]
