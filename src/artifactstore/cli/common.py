"""What the client commands share: the ``--server``/``--token`` options, sizes, progress bars.

The commands are thin layers over ``artifactstore.client``: they parse
arguments, call the library, print its typed results and leave exit codes
to ``main.py``. Progress arrives as ``TransferProgress`` callbacks (one bar
per phase, on stderr when it is a terminal) and the library's warnings
(retries, skipped empty directories, a yanked version) as log records,
printed as plain lines that do not tear the bars.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Annotated, Self

import rich.console
import rich.progress
import typer

from artifactstore.client.endpoint import DEFAULT_RETRY_SECONDS, resolve_endpoint
from artifactstore.config import DEFAULT_SERVER_URL, ENV_SERVER
from artifactstore.protocol import ENV_TOKEN

if TYPE_CHECKING:
    from artifactstore.client import TransferProgress
    from artifactstore.client.endpoint import Endpoint

__all__ = [
    "Progress",
    "RetryOption",
    "ServerOption",
    "TokenOption",
    "endpoint",
    "format_size",
]

ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        metavar="URL",
        help=f"Registry URL (or {ENV_SERVER}; default {DEFAULT_SERVER_URL}).",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        metavar="TOKEN",
        help=f"API token (or {ENV_TOKEN}; on loopback the server's admin-token file).",
        show_default=False,
    ),
]

RetryOption = Annotated[
    float,
    typer.Option(
        "--retry-seconds",
        metavar="SECONDS",
        min=0,
        help="How long one step is retried after the server could not be reached, 5xx or 408"
        " answers; then the command gives up (exit 3) and a re-run resumes.",
    ),
]


def endpoint(
    server: str | None, token: str | None, *, retry_seconds: float = DEFAULT_RETRY_SECONDS
) -> Endpoint:
    """The endpoint of a command's ``--server`` and ``--token``."""
    return resolve_endpoint(server, token, retry_seconds=retry_seconds)


def format_size(size: int) -> str:
    """Bytes for people: ``512 B``, ``1.5 KiB``, ``3.2 GiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":  # noqa: PLR2004
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - the loop always returns


class Progress(logging.Handler):
    """Bars for ``TransferProgress`` callbacks and a line per library warning, on stderr.

    Bars only when stderr is a terminal; warnings always. Use as a context
    manager around the library call and pass ``update`` as its ``progress``.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._bars: rich.progress.Progress | None = None
        self._tasks: dict[str, rich.progress.TaskID] = {}
        if sys.stderr.isatty():
            self._bars = rich.progress.Progress(
                rich.progress.TextColumn("{task.description}"),
                rich.progress.BarColumn(),
                rich.progress.DownloadColumn(binary_units=True),
                rich.progress.TransferSpeedColumn(),
                rich.progress.TimeRemainingColumn(),
                console=rich.console.Console(stderr=True),
            )

    def __enter__(self) -> Self:
        logging.getLogger("artifactstore.client").addHandler(self)
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        logging.getLogger("artifactstore.client").removeHandler(self)
        if self._bars is not None:
            self._bars.stop()

    def update(self, progress: TransferProgress) -> None:
        """Move the phase's bar (a callback for the library)."""
        if self._bars is None:
            return
        task = self._tasks.get(progress.phase)
        if task is None:
            task = self._tasks[progress.phase] = self._bars.add_task(progress.phase)
        self._bars.update(task, completed=progress.done, total=progress.total)

    def emit(self, record: logging.LogRecord) -> None:
        """Print a library warning as one line."""
        message = record.getMessage()
        if self._bars is not None:
            self._bars.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=sys.stderr)
