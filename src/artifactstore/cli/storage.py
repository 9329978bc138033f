"""``artifactstore storage verify|status|replicate``: storage integrity, run beside the server.

These commands talk to the database and the backends directly (DESIGN
section 6), not through the server: they read configuration like the server
does (``--config``/``ARTIFACTSTORE_CONFIG``, ``--data-dir``/
``ARTIFACTSTORE_DATA_DIR``, ``ARTIFACTSTORE_DATABASE_URL``) and open the
registry with ``Registry.open``. The work is ``registry.verify`` and
``registry.replicate``; this module parses options, draws a progress bar
(only when stderr is a terminal) and prints.

Exit codes (the table is ``cli.main``'s; these commands raise into it):

* ``verify``: 0 when every copy matched and there is no orphan, 1 otherwise;
  2 for an unknown ``--backend``; 3 when the database or a backend is
  unreachable.
* ``status``: 0 when every backend is healthy and no copy is failed or
  missing, 1 when some copy is failed or missing, 3 when a backend is
  unhealthy.
* ``replicate``: 0 when every copy that was needed was made, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Self

import typer

from artifactstore.config import ENV_CONFIG, ENV_DATA_DIR, load_settings
from artifactstore.errors import BackendUnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.progress import Progress

    from artifactstore.registry import Registry
    from artifactstore.registry.replicate import ReplicateProgress, ReplicateReport
    from artifactstore.registry.verify import VerifyProgress, VerifyReport

__all__ = ["CLI_ACTOR", "storage_app"]

CLI_ACTOR = "cli:storage"
# Objects verified at once (registry.verify.DEFAULT_CONCURRENCY; not imported
# here so the CLI starts without loading the registry).
DEFAULT_VERIFY_CONCURRENCY = 4
# Failed and missing copies listed by ``status`` (the counts are always complete).
STATUS_LIST_LIMIT = 1000
EXIT_MISMATCH = 1
_KIB = 1024
EXIT_UNAVAILABLE = 3

storage_app = typer.Typer(
    help="Storage integrity: verify every copy, show backend status, replicate.",
    no_args_is_help=True,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", metavar="FILE", help=f"artifactstore.toml (or {ENV_CONFIG})."),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", metavar="DIR", help=f"The data dir (or {ENV_DATA_DIR})."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON document.")]


async def _open(config: Path | None, data_dir: Path | None) -> Registry:
    # The registry (SQLAlchemy and all) loads only when a command runs, so
    # `artifactstore --help` and the HTTP commands start fast.
    from artifactstore.registry import Registry  # noqa: PLC0415

    return await Registry.open(load_settings(config, data_dir=data_dir))


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < _KIB:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= _KIB
    return f"{n:.1f} TiB"


class _Bar:
    """A rich progress bar on stderr, one task per backend; silent when not a terminal."""

    def __init__(self) -> None:
        self._progress: Progress | None = None
        self._tasks: dict[str, Any] = {}
        if sys.stderr.isatty():
            from rich.console import Console  # noqa: PLC0415 - only on a terminal
            from rich.progress import (  # noqa: PLC0415
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )

    def __enter__(self) -> Self:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, key: str, description: str, completed: int, total: int | None) -> None:
        """Move the bar of ``key``."""
        if self._progress is None:
            return
        if key not in self._tasks:
            self._tasks[key] = self._progress.add_task(description, total=total)
        self._progress.update(
            self._tasks[key], description=description, completed=completed, total=total
        )

    def verify_callback(self) -> Callable[[VerifyProgress], None]:
        """A ``verify_storage`` progress callback."""

        def on_progress(p: VerifyProgress) -> None:
            if p.phase == "verify":
                label = f"verify {p.backend} ({p.done}/{p.total})"
                self.update(p.backend, label, p.bytes_done, p.total_bytes)
            else:
                self.update(p.backend, f"list {p.backend} ({p.done} objects)", 1, 1)

        return on_progress


def _print_verify(report: VerifyReport, elapsed: float) -> None:
    for title, findings in (
        ("FAILED", report.failures),
        ("MISSING", report.missing_objects),
        ("ORPHAN", report.orphan_objects),
    ):
        for f in findings:
            print(f"{title:<8} sha256:{f.sha256}  {f.backend}  {f.reason}")
    rate = report.bytes / elapsed / 1e9 if elapsed > 0 else 0.0
    print(
        f"verify {', '.join(report.backends)}: {report.checked} checked, "
        f"{report.verified} verified, {report.failed} failed, {report.missing} missing, "
        f"{report.orphans} orphans; {_human_bytes(report.bytes)} in {elapsed:.1f} s "
        f"({rate:.2f} GB/s)"
    )
    print("storage verify: ok" if report.ok else "storage verify: PROBLEMS FOUND")


@storage_app.command("verify")
def verify_command(
    backend: Annotated[
        list[str] | None,
        typer.Option("--backend", "-b", metavar="NAME", help="Verify only this backend (repeat)."),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-j", min=1, max=64, help="Objects verified at once.")
    ] = DEFAULT_VERIFY_CONCURRENCY,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Re-read and re-hash every copy, record verified/failed/missing, report orphans."""

    async def run() -> tuple[VerifyReport, float]:
        registry = await _open(config, data_dir)
        try:
            with _Bar() as bar:
                started = time.perf_counter()
                from artifactstore.registry.verify import verify_storage  # noqa: PLC0415

                report = await verify_storage(
                    registry,
                    backends=backend or None,
                    concurrency=concurrency,
                    progress=bar.verify_callback(),
                    actor=CLI_ACTOR,
                )
                return report, time.perf_counter() - started
        finally:
            await registry.aclose()

    report, elapsed = asyncio.run(run())
    if as_json:
        doc = report.to_json()
        doc["seconds"] = round(elapsed, 3)
        print(json.dumps(doc, indent=2))
    else:
        _print_verify(report, elapsed)
    if not report.ok:
        raise typer.Exit(EXIT_MISMATCH)


async def _status(registry: Registry) -> dict[str, Any]:
    from artifactstore.registry.storage_status import (  # noqa: PLC0415 - see _open
        location_problems,
        storage_status,
    )

    backends = await storage_status(registry)
    problems = await location_problems(registry, limit=STATUS_LIST_LIMIT)
    return {
        "backends": [
            {
                "name": b.name,
                "type": b.kind,
                "healthy": b.healthy,
                "detail": b.detail,
                "locations": b.locations,
            }
            for b in backends
        ],
        "problems": [dataclasses.asdict(p) for p in problems],
    }


@storage_app.command("status")
def status_command(
    as_json: JsonOption = False, config: ConfigOption = None, data_dir: DataDirOption = None
) -> None:
    """Each backend: health and copies by state; failed and missing copies listed."""

    async def run() -> dict[str, Any]:
        registry = await _open(config, data_dir)
        try:
            return await _status(registry)
        finally:
            await registry.aclose()

    doc = asyncio.run(run())
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        for b in doc["backends"]:
            state = "healthy" if b["healthy"] else "UNHEALTHY"
            counts = ", ".join(f"{k} {v}" for k, v in b["locations"].items())
            print(f"{b['name']:<16} {b['type']:<9} {state:<10} {counts}  ({b['detail']})")
        for p in doc["problems"]:
            print(f"{p['state'].upper():<8} sha256:{p['sha256']}  {p['backend']}  {p['detail']}")
    if not all(b["healthy"] for b in doc["backends"]):
        raise typer.Exit(EXIT_UNAVAILABLE)
    if doc["problems"]:
        raise typer.Exit(EXIT_MISMATCH)


@storage_app.command("replicate")
def replicate_command(
    to: Annotated[str, typer.Option("--to", metavar="NAME", help="The backend to copy to.")],
    source: Annotated[
        str | None,
        typer.Option("--from", metavar="NAME", help="Copy only from this backend."),
    ] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Copy every blob that has a readable copy elsewhere but none on --to (re-hashed)."""

    async def run() -> ReplicateReport:
        registry = await _open(config, data_dir)
        try:
            target = registry.store.backend(to)
            health = await target.health()
            if not health.ok:
                raise BackendUnavailableError(
                    f"storage backend {to!r} is unreachable: {health.detail}", backend=to
                )
            with _Bar() as bar:

                def on_progress(p: ReplicateProgress) -> None:
                    label = f"replicate to {p.target} ({p.copied} copied, {p.checked} checked)"
                    bar.update(p.target, label, p.bytes, None)

                from artifactstore.registry.replicate import replicate  # noqa: PLC0415

                return await replicate(
                    registry, to=to, source=source, progress=on_progress, actor=CLI_ACTOR
                )
        finally:
            await registry.aclose()

    report = asyncio.run(run())
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for f in report.failures:
            print(f"FAILED   sha256:{f.sha256}  {f.backend}  {f.reason}")
        print(
            f"replicate to {report.target}: {report.checked} blobs checked, "
            f"{report.copied} copied ({_human_bytes(report.bytes)}), "
            f"{report.present} already there, {len(report.failures)} failed"
        )
    if not report.ok:
        raise typer.Exit(EXIT_MISMATCH)
