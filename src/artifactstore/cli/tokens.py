"""``artifactstore token create|list|revoke``: API tokens, managed in the database directly.

Like ``events verify``, these commands do not go through the server: whoever
can reach the database may mint tokens, which is how the first token of an
installation with an external database comes to be. A token is printed once,
at creation; the registry stores only its sha256 (``registry.Tokens``).
Events record the actor as ``cli:<local user>``.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import re
import secrets
import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from artifactstore.cli.db import ConfigOption, database
from artifactstore.cli.listing import format_table

if TYPE_CHECKING:
    from artifactstore.registry.tokens import TokenInfo

__all__ = ["app", "cli_actor"]


class Scope(StrEnum):
    """The choices of ``--scope``: ``registry.tokens.SCOPES``, which also validates them.

    Spelled out rather than imported so that the client commands start
    without loading SQLAlchemy.
    """

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


DEFAULT_SCOPE = Scope.WRITE

app = typer.Typer(help="API tokens (talks to the database directly).", no_args_is_help=True)


def _user() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        return "cli"
    cleaned = re.sub(r"[^A-Za-z0-9._@-]", "-", user)[:40].lstrip("._@-")
    return cleaned or "cli"


def cli_actor() -> str:
    """The actor recorded for changes made from this command line."""
    return f"cli:{_user()}"


@app.command("create")
def create_command(
    scope: Annotated[Scope, typer.Option(help="What the token may do.")] = DEFAULT_SCOPE,
    name: Annotated[
        str | None,
        typer.Option(help="Unique name (default: <user>-<random>).", show_default=False),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"token", "name", "scope"}.')
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Create a token and print it; it is shown only this once."""
    chosen = name or f"{_user()}-{secrets.token_hex(4)}"

    async def run() -> str:
        async with database(config) as db:
            from artifactstore.registry import Tokens  # noqa: PLC0415 - see Scope

            return await Tokens(db.engine).create(chosen, str(scope), actor=cli_actor())

    token = asyncio.run(run())
    if as_json:
        print(json.dumps({"token": token, "name": chosen, "scope": str(scope)}))
        return
    print(token)
    print(f"created token {chosen!r} (scope {scope}); it is not shown again", file=sys.stderr)


@app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """List tokens by name (never the tokens themselves), revoked ones included."""

    async def run() -> list[TokenInfo]:
        async with database(config) as db:
            from artifactstore.registry import Tokens  # noqa: PLC0415 - see Scope

            return await Tokens(db.engine).list()

    infos = asyncio.run(run())
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "name": t.name,
                        "scope": t.scope,
                        "created_at": t.created_at.isoformat(),
                        "revoked": t.revoked,
                    }
                    for t in infos
                ]
            )
        )
        return
    rows = [
        [
            t.name,
            t.scope,
            t.created_at.isoformat(timespec="seconds"),
            "revoked" if t.revoked else "active",
        ]
        for t in infos
    ]
    if rows:
        print(format_table(["NAME", "SCOPE", "CREATED", "STATE"], rows))


@app.command("revoke")
def revoke_command(
    name: Annotated[str, typer.Argument(help="The token's name.", show_default=False)],
    config: ConfigOption = None,
) -> None:
    """Revoke a token by name (revoking twice is fine); it stops working at once."""

    async def run() -> None:
        async with database(config) as db:
            from artifactstore.registry import Tokens  # noqa: PLC0415 - see Scope

            await Tokens(db.engine).revoke(name, actor=cli_actor())

    asyncio.run(run())
    print(f"revoked token {name!r}", file=sys.stderr)
