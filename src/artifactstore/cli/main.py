"""The ``artifactstore`` typer app: command registration, ``--debug``, and exit codes.

This module owns the CLI's one exception-to-exit-code table (DESIGN section 6):

====  ==========================================================================
code  meaning
====  ==========================================================================
0     success
1     verification or integrity failure (``IntegrityError`` family), a version
      published with other content (``ConflictError``), or any other failure
2     usage error: bad arguments or input (``InvalidInputError``), a name that
      does not exist (``NotFoundError``), missing or insufficient credentials
3     the server, the database or a storage backend is unreachable
      (``UnavailableError``, httpx transport errors)
====  ==========================================================================

An error is one line on stderr (``error: <message>``); the traceback is
printed only with ``--debug``. Commands live in one module per group and
raise; they never call ``sys.exit`` with an error code themselves.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import httpx
import typer
import typer.exceptions

from artifactstore import errors
from artifactstore.cli import db as db_cli
from artifactstore.cli import events as events_cli
from artifactstore.cli import tokens as tokens_cli
from artifactstore.cli.delete import delete_command
from artifactstore.cli.download import download_command
from artifactstore.cli.listing import ls_command
from artifactstore.cli.serve import serve_command
from artifactstore.cli.storage import storage_app
from artifactstore.cli.upload import upload_command

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "app",
    "exit_code_for",
    "main",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130

# The one table: the first entry the exception is an instance of wins, so
# specific classes come before their families.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (errors.IntegrityError, EXIT_FAILURE),
    (errors.ConflictError, EXIT_FAILURE),
    (errors.InvalidInputError, EXIT_USAGE),
    (errors.NotFoundError, EXIT_USAGE),
    (errors.AuthError, EXIT_USAGE),
    (errors.UnavailableError, EXIT_UNAVAILABLE),
    (httpx.TransportError, EXIT_UNAVAILABLE),
)


def exit_code_for(exc: BaseException) -> int:
    """The exit code for an exception that ended a command (1 when nothing matches)."""
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return EXIT_FAILURE


@dataclass
class _State:
    """Options of the top-level callback that ``main`` needs after the command ran."""

    debug: bool = False


_state = _State()

app = typer.Typer(
    name="artifactstore",
    help="A content-addressed artifact registry: upload, download, list, verify.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks and HTTP requests on stderr.")
    ] = False,
) -> None:
    """A content-addressed artifact registry: upload, download, list, verify."""
    _state.debug = debug
    if debug:
        logging.basicConfig(
            level=logging.DEBUG,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )


app.command("serve")(serve_command)
app.command("upload")(upload_command)
app.command("download")(download_command)
app.command("ls")(ls_command)
app.command("delete")(delete_command)
app.add_typer(events_cli.app, name="events")
app.add_typer(db_cli.app, name="db")
app.add_typer(tokens_cli.app, name="token")
app.add_typer(storage_app, name="storage")


def _one_line(exc: BaseException) -> str:
    """The error's message on one line."""
    if isinstance(exc, errors.ArtifactStoreError):
        text = exc.message
    elif isinstance(exc, httpx.TransportError):
        text = f"cannot reach the server: {str(exc) or type(exc).__name__}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


SERVER_MODULES = frozenset({
    "aioboto3", "alembic", "asyncpg", "fastapi", "pgserver", "prometheus_client",
    "sqlalchemy", "starlette", "uvicorn", "uvloop",
})  # fmt: skip
"""Top-level modules of the ``server`` extra (pyproject.toml)."""


def _without_server_extra(exc: BaseException) -> errors.InvalidInputError | None:
    """A usage error for a server command run where only the client is installed."""
    if not isinstance(exc, ModuleNotFoundError) or exc.name is None:
        return None
    if exc.name.partition(".")[0] not in SERVER_MODULES:
        return None
    return errors.InvalidInputError(
        f"this command needs the server's dependencies ({exc.name} is missing):"
        " pip install 'artifactstore[server]'"
    )


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    _state.debug = False
    command = typer.main.get_command(app)
    try:
        result = command.main(
            args=list(argv) if argv is not None else None,
            prog_name="artifactstore",
            standalone_mode=False,
        )
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except typer.exceptions.TyperException as exc:
        # Bad arguments (typer's UsageError family, exit code 2) keep typer's
        # format: the usage line, then the problem.
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            print(f"error: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except Exception as raised:  # noqa: BLE001 - the one place errors become exit codes
        failure = _without_server_extra(raised) or raised
        if _state.debug:
            traceback.print_exc(file=sys.stderr)
        print(f"error: {_one_line(failure)}", file=sys.stderr)
        return exit_code_for(failure)
    # standalone_mode=False returns the code of an explicit typer.Exit, or the
    # command's own return value (None for every command here).
    return result if isinstance(result, int) else EXIT_OK


def main() -> None:
    """Console-script entry point (``artifactstore``).

    Leaves with ``os._exit`` once the output is flushed: the command has
    already closed everything it opened, and tearing down the ~300 modules it
    imported took another 50-110 ms per run on the reference VM
    (docs/PERFORMANCE.md).
    """
    code = run()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe: the output is lost, say so in the code
        code = code or EXIT_FAILURE
    os._exit(code)


if __name__ == "__main__":
    main()
