"""``artifactstore upload``: publish files and directories as PACKAGE VERSION.

A thin layer over ``artifactstore.client`` (``client/publish.py`` has the
steps: collect -> hash -> ensure blobs -> publish): it parses the options,
shows progress and prints the manifest digest (or ``--json``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from artifactstore.cli.common import (
    Progress,
    RetryOption,
    ServerOption,
    TokenOption,
    endpoint,
    format_size,
)
from artifactstore.client import AsyncClient, UploadOptions, UploadResult
from artifactstore.client.endpoint import DEFAULT_RETRY_SECONDS

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["parse_size", "upload_command"]

DEFAULT_CONCURRENCY = 4
MAX_CONCURRENCY = 64

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
}


def parse_size(text: str | int) -> int:
    """Bytes from ``8388608``, ``8M``, ``8MiB`` or ``512k`` (units are powers of 1024).

    Raises:
        ValueError: not a positive size.
    """
    if isinstance(text, int):
        if text <= 0:
            raise ValueError("size must be positive")
        return text
    cleaned = text.strip().lower()
    digits = cleaned.rstrip("abcdefghijklmnopqrstuvwxyz ")
    unit = cleaned[len(digits) :].strip()
    if not digits.isdigit() or unit not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size (examples: 8388608, 8M, 8MiB)")
    size = int(digits) * _SIZE_UNITS[unit]
    if size <= 0:
        raise ValueError("size must be positive")
    return size


def _parse_annotations(pairs: Sequence[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--annotation")
        if key in result:
            raise typer.BadParameter(f"key {key!r} given twice", param_hint="--annotation")
        result[key] = value
    return result


def upload_command(  # noqa: PLR0917 - typer passes every option as a parameter
    package: Annotated[str, typer.Argument(help="Package name.", show_default=False)],
    version: Annotated[str, typer.Argument(help="Version to publish.", show_default=False)],
    paths: Annotated[
        list[Path],
        typer.Argument(help="Files and directories (recursive).", show_default=False),
    ],
    server: ServerOption = None,
    token: TokenOption = None,
    retry_seconds: RetryOption = DEFAULT_RETRY_SECONDS,
    producer: Annotated[
        str | None, typer.Option(help="Who produced the files (e.g. ci-release).")
    ] = None,
    retention_class: Annotated[
        str | None, typer.Option(help="Retention class (storage routing).")
    ] = None,
    annotation: Annotated[
        list[str] | None,
        typer.Option("--annotation", metavar="KEY=VALUE", help="Manifest annotation; repeatable."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
    concurrency: Annotated[
        int,
        typer.Option(min=1, max=MAX_CONCURRENCY, help="Blobs uploaded at once."),
    ] = DEFAULT_CONCURRENCY,
    chunk_size: Annotated[
        str,
        typer.Option(metavar="BYTES", help="Bytes per PATCH request (256MiB, 8M, 8388608)."),
    ] = "256MiB",
    handoff: Annotated[
        bool,
        typer.Option(
            help="On a server on this machine, hand files over a local socket"
            " instead of sending their bytes over HTTP.",
        ),
    ] = True,
) -> None:
    """Upload files and directories as PACKAGE VERSION and print the manifest digest.

    Re-running an upload that succeeded is a no-op success; a version already
    published with other content is an error (exit 1).
    """
    try:
        chunk_bytes = parse_size(chunk_size)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--chunk-size") from exc
    labels = _parse_annotations(annotation or [])
    options = UploadOptions(concurrency=concurrency, chunk_size=chunk_bytes, handoff=handoff)

    async def run() -> UploadResult:
        with Progress() as progress:
            async with AsyncClient(
                endpoint=endpoint(server, token, retry_seconds=retry_seconds),
                max_connections=concurrency + 2,
            ) as client:
                return await client.upload(
                    package,
                    version,
                    paths,
                    producer=producer,
                    retention_class=retention_class,
                    annotations=labels,
                    options=options,
                    progress=progress.update,
                )

    result = asyncio.run(run())
    if as_json:
        print(json.dumps(result.to_json()))
        return
    print(result.manifest_sha256)
    state = "published" if result.created else "already published (unchanged)"
    print(
        f"{package} {version} {state}: {result.files} files,"
        f" {result.uploaded} uploaded ({format_size(result.bytes_uploaded)}),"
        f" {result.skipped} already stored",
        file=sys.stderr,
    )
