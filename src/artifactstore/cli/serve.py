"""``artifactstore serve``: the REST API and the S3 gateway in one process.

Zero configuration works: embedded PostgreSQL and a ``local`` backend under
the data dir. Both listeners share one registry (one pool, one set of
backends) and run on one event loop (uvloop, httptools); both take the
slow-client limits of ``[server]`` (``api.connections``).

SIGTERM drains first: ``/readyz`` answers 503 at once while both
listeners keep serving for ``server.drain_seconds``, so a load balancer moves
new work to other replicas; then the listeners close and in-flight requests
get up to ``GRACEFUL_SECONDS`` to finish (uvicorn's graceful shutdown), the
registry closes and the embedded cluster is released. A second signal skips
what is left of the drain; one after the listeners closed stops without
waiting for requests. SIGINT (Ctrl-C) skips the drain: someone at a
terminal wants the server gone, not a balancer told first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from artifactstore.config import load_settings
from artifactstore.errors import InvalidInputError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator
    from typing import Any

    import uvicorn

    from artifactstore.api.services import Lifecycle
    from artifactstore.config import ServerSettings, Settings
    from artifactstore.registry import Registry

__all__ = ["run_server", "serve_command"]

log = logging.getLogger("artifactstore.serve")
GRACEFUL_SECONDS = 30  # after the drain: how long in-flight requests get once listeners close


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("alembic").setLevel(logging.WARNING)


def listen(host: str, port: int) -> socket.socket:
    """Bind a listening socket now, so a taken port is one clear error before any work.

    Raises:
        InvalidInputError: the address is in use or cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise InvalidInputError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            " (another artifactstore serve? choose --port / --s3-port)"
        ) from None
    return sock


def _server(
    app: Callable[..., Any], host: str, port: int, limits: ServerSettings
) -> uvicorn.Server:
    import uvicorn  # noqa: PLC0415 - the server extra, loaded by serve only (docs/CLIENT.md)

    from artifactstore.api.connections import guarded_protocol  # noqa: PLC0415 - uvicorn

    class _Server(uvicorn.Server):
        """A uvicorn server whose signals ``run_server`` handles for both listeners."""

        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=guarded_protocol(limits),  # httptools, with a head deadline and a cap
        timeout_keep_alive=limits.keep_alive_timeout_seconds,
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        server_header=False,
    )
    return _Server(config)


class _Stopper:
    """What SIGINT/SIGTERM do: drain, then close the listeners, then stop waiting for requests."""

    def __init__(self, servers: list[uvicorn.Server], lifecycle: Lifecycle, seconds: int) -> None:
        self.servers = servers
        self.lifecycle = lifecycle
        self.seconds = seconds
        self.drainer: asyncio.Task[None] | None = None
        self.closed = False

    def on_interrupt(self) -> None:
        """SIGINT (Ctrl-C at a terminal): no drain, close the listeners now; again: force exit."""
        if self.closed:
            self._force_exit()
            return
        log.info("interrupted: closing the listeners now")
        self._close_listeners()

    def on_signal(self) -> None:
        """First signal: drain; during the drain: close the listeners now; after: force the exit."""
        if self.closed:
            self._force_exit()
        elif self.drainer is None:
            self.drainer = asyncio.get_running_loop().create_task(self._drain())
        else:
            log.info("second signal: closing the listeners now")
            self._close_listeners()

    def _force_exit(self) -> None:
        log.info("signal after the listeners closed: not waiting for in-flight requests")
        for server in self.servers:
            server.force_exit = True

    async def _drain(self) -> None:
        self.lifecycle.draining = True
        log.info("draining: /readyz answers 503; listeners close in %d s", self.seconds)
        await asyncio.sleep(self.seconds)
        self._close_listeners()

    def _close_listeners(self) -> None:
        if self.drainer is not None and self.drainer is not asyncio.current_task():
            self.drainer.cancel()
        self.closed = True
        self.lifecycle.draining = True
        for server in self.servers:
            server.should_exit = True

    def close(self) -> None:
        """Cancel a drain still waiting (the servers stopped by themselves)."""
        if self.drainer is not None:
            self.drainer.cancel()


async def run_server(settings: Settings, *, host: str, port: int, s3_port: int | None) -> None:
    """Open the registry, serve both listeners until a signal, then close everything."""
    from artifactstore.api.app import create_app  # noqa: PLC0415 - heavy imports on demand
    from artifactstore.api.services import Lifecycle  # noqa: PLC0415
    from artifactstore.registry import Registry  # noqa: PLC0415

    gateway_host = settings.gateway.host or host
    sockets = [listen(host, port)]
    try:
        if s3_port is not None:
            sockets.append(listen(gateway_host, s3_port))
        registry = await Registry.open(settings)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    lifecycle = Lifecycle()
    stopper: _Stopper | None = None
    try:
        app = create_app(
            settings,
            registry=registry,
            host=host,
            lifecycle=lifecycle,
            replica=f"{socket.gethostname()}:{port}",
        )
        servers = [_server(app, host, port, settings.server)]
        if s3_port is not None:
            gateway = _gateway_app(settings, registry, host)
            if gateway is not None:
                servers.append(_server(gateway, gateway_host, s3_port, settings.server))
        loop = asyncio.get_running_loop()

        stopper = _Stopper(servers, lifecycle, settings.server.drain_seconds)
        loop.add_signal_handler(signal.SIGTERM, stopper.on_signal)
        loop.add_signal_handler(signal.SIGINT, stopper.on_interrupt)
        log.info(
            "artifactstore %s: API http://%s:%d, data dir %s",
            "serving",
            host,
            port,
            settings.data_dir,
        )
        await asyncio.gather(
            *(server.serve(sockets=[sock]) for server, sock in zip(servers, sockets, strict=False))
        )
    finally:
        if stopper is not None:
            stopper.close()
        for sock in sockets:
            sock.close()
        await registry.aclose()


def _gateway_app(settings: Settings, registry: Registry, host: str) -> Callable[..., Any] | None:
    try:
        from artifactstore.gateway.app import create_gateway_app  # noqa: PLC0415
    except ImportError:
        log.warning("S3 gateway not available in this build")
        return None
    return create_gateway_app(settings, registry=registry, host=host)


def serve_command(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="REST API port (default 8080)")] = None,
    s3_port: Annotated[
        int | None, typer.Option("--s3-port", help="S3 gateway port (default 9000)")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Where everything lives (embedded default)")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="artifactstore.toml (or ARTIFACTSTORE_CONFIG)")
    ] = None,
) -> None:
    """Run the REST API and the S3 read gateway."""
    _configure_logging()
    settings = load_settings(config, data_dir=data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    bind = host or settings.server.host
    # uvicorn's ``loop="uvloop"`` only applies when uvicorn owns the loop; this
    # process runs two servers on one loop of its own, so it asks for uvloop here.
    import uvloop  # noqa: PLC0415 - the server extra

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(
            run_server(
                settings,
                host=bind,
                port=port if port is not None else settings.server.port,
                s3_port=s3_port if s3_port is not None else settings.gateway.port,
            )
        )
