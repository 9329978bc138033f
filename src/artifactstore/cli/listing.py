"""``artifactstore ls``: packages, the versions of a package, the files of a version.

Reads ``GET /v1/packages[/{name}[/versions/{version}]]`` and follows
``next_cursor`` until every page is read. Plain output is aligned columns for
people (yanked versions are marked); ``--json`` prints one JSON document:
``{"packages": [...]}``, the package with all its ``versions``, or the
version with its ``manifest``, in the REST shapes of docs/API.md.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import typer

from artifactstore.cli.common import ServerOption, TokenOption, endpoint, format_size
from artifactstore.client.transport import Transport
from artifactstore.names import validate_package_name, validate_version

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["format_table", "ls_command"]

PAGE = 1000


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the last column is not padded."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


async def _pages(api: Transport, path: str, key: str) -> tuple[dict[str, Any], list[Any]]:
    """The first page's document and the ``key`` items of every page."""
    first: dict[str, Any] | None = None
    items: list[Any] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": PAGE}
        if cursor:
            params["cursor"] = cursor
        page = await api.json("GET", path, params=params)
        first = first or page
        items.extend(page.get(key, []))
        cursor = page.get("next_cursor")
        if not cursor:
            return first, items


def _date(text: str | None) -> str:
    return (text or "")[:19].replace("T", " ")


async def _run(
    package: str | None,
    version: str | None,
    endpoint_args: tuple[str | None, str | None],
    as_json: bool,
) -> str:
    async with Transport(endpoint(*endpoint_args, retry_seconds=0)) as api:
        if package is None:
            _, items = await _pages(api, "/v1/packages", "items")
            if as_json:
                return json.dumps({"packages": items})
            rows = [[p["name"], str(p["version_count"]), _date(p["updated_at"])] for p in items]
            return format_table(["PACKAGE", "VERSIONS", "UPDATED"], rows) if rows else ""
        validate_package_name(package)
        if version is None:
            doc, versions = await _pages(api, f"/v1/packages/{quote(package)}", "versions")
            if as_json:
                return json.dumps({**doc, "versions": versions, "next_cursor": None})
            rows = [
                [
                    v["version"] + (" (yanked)" if v.get("yanked") else ""),
                    _date(v.get("published_at")),
                    str(v.get("file_count", "")),
                    format_size(int(v.get("total_size") or 0)),
                    str(v.get("manifest_sha256", "")),
                ]
                for v in versions
            ]
            header = ["VERSION", "PUBLISHED", "FILES", "SIZE", "MANIFEST"]
            return format_table(header, rows) if rows else ""
        validate_version(version)
        doc = await api.json("GET", f"/v1/packages/{quote(package)}/versions/{quote(version)}")
        if as_json:
            return json.dumps(doc)
        files = doc.get("manifest", {}).get("files", [])
        rows = [[f["path"], str(f["size"]), str(f["sha256"])] for f in files]
        lines = []
        if doc.get("yanked"):
            reason = doc.get("yank_reason") or "no reason given"
            lines.append(f"# yanked: {reason}")
        lines.append(format_table(["PATH", "SIZE", "SHA256"], rows))
        return "\n".join(lines)


def ls_command(
    package: Annotated[
        str | None, typer.Argument(help="List this package's versions.", show_default=False)
    ] = None,
    version: Annotated[
        str | None, typer.Argument(help="List this version's files.", show_default=False)
    ] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List packages, the versions of PACKAGE, or the files of PACKAGE VERSION."""
    text = asyncio.run(_run(package, version, (server, token), as_json))
    if text:
        print(text)
