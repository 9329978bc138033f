"""``artifactstore download``: write a version's files, verifying every byte on the way.

A thin layer over ``artifactstore.client`` (``client/download.py`` has how:
a verified temporary file per blob, renamed into place only when size,
sha256 and blake3 match; the same-host handoff or raw HTTP for the bytes).
The command does not delete files in the output directory that the
manifest does not name.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from artifactstore.cli.common import (
    Progress,
    RetryOption,
    ServerOption,
    TokenOption,
    endpoint,
    format_size,
)
from artifactstore.client import AsyncClient, DownloadResult
from artifactstore.client.endpoint import DEFAULT_RETRY_SECONDS
from artifactstore.names import validate_package_name, validate_version

__all__ = ["download_command"]

DEFAULT_CONCURRENCY = 4
MAX_CONCURRENCY = 64


def download_command(  # noqa: PLR0917 - typer passes every option as a parameter
    package: Annotated[str, typer.Argument(help="Package name.", show_default=False)],
    version: Annotated[str, typer.Argument(help="Version.", show_default=False)],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Directory to write into (default ./PACKAGE-VERSION)."),
    ] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    retry_seconds: RetryOption = DEFAULT_RETRY_SECONDS,
    concurrency: Annotated[
        int, typer.Option(min=1, max=MAX_CONCURRENCY, help="Files downloaded at once.")
    ] = DEFAULT_CONCURRENCY,
    expect_manifest: Annotated[
        str | None,
        typer.Option(
            "--expect-manifest",
            metavar="SHA256",
            help="Refuse unless the version's manifest has this sha256.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
    handoff: Annotated[
        bool,
        typer.Option(
            help="From a server on this machine, copy its stored files directly"
            " instead of receiving the bytes over HTTP.",
        ),
    ] = True,
) -> None:
    """Download PACKAGE VERSION, verifying sha256 and blake3 of every file.

    A file whose bytes do not match the manifest is not left in place (exit 1).
    """
    validate_package_name(package)
    validate_version(version)
    dest = output or Path.cwd() / f"{package}-{version}"

    async def run() -> DownloadResult:
        with Progress() as progress:
            async with AsyncClient(
                endpoint=endpoint(server, token, retry_seconds=retry_seconds),
                max_connections=concurrency + 2,
            ) as client:
                return await client.download(
                    package,
                    version,
                    dest,
                    concurrency=concurrency,
                    expect_manifest=expect_manifest,
                    handoff=handoff,
                    progress=progress.update,
                )

    result = asyncio.run(run())
    if as_json:
        print(json.dumps(result.to_json()))
        return
    print(result.output)
    print(
        f"downloaded {package} {version}: {result.files} files,"
        f" {format_size(result.bytes)}, all digests verified",
        file=sys.stderr,
    )
