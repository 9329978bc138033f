"""``artifactstore delete PACKAGE VERSION`` and ``artifactstore delete PACKAGE --all``.

Parses options and prints; the client library (``delete_version``,
``delete_package``) does the work. A deletion is final (DESIGN section 11):
the version leaves every listing and its name is never published again.
Blobs stay until garbage collection.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from artifactstore.cli.common import ServerOption, TokenOption, endpoint
from artifactstore.client import AsyncClient
from artifactstore.errors import InvalidInputError
from artifactstore.names import validate_package_name, validate_version

__all__ = ["delete_command"]


def delete_command(  # noqa: PLR0917 - typer passes every option as a parameter
    package: Annotated[str, typer.Argument(help="The package.", show_default=False)],
    version: Annotated[
        str | None, typer.Argument(help="The version to delete.", show_default=False)
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Delete every version of PACKAGE.")] = False,
    reason: Annotated[
        str, typer.Option("--reason", metavar="TEXT", help="Recorded in the event log.")
    ] = "",
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Delete PACKAGE VERSION, or every version of PACKAGE with --all (admin; final)."""
    validate_package_name(package)
    if (version is None) == (not every):
        raise InvalidInputError("name a VERSION or pass --all (not both)")
    if version is not None:
        validate_version(version)

    async def run() -> list[str]:
        async with AsyncClient(endpoint=endpoint(server, token, retry_seconds=0)) as client:
            if version is not None:
                await client.delete_version(package, version, reason)
                return [version]
            return await client.delete_package(package, reason)

    deleted = asyncio.run(run())
    for name in deleted:
        print(f"deleted {package} {name}")
    if not deleted:
        print(f"{package} has no versions to delete")
