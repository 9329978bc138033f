"""``artifactstore events tail|verify|replay``: read, check and re-apply the event log.

``tail`` is a client of the server: pages of ``GET /v1/events`` and, with
``--follow``, the Server-Sent Events stream ``GET /v1/events/stream``,
reconnecting after the last seq it printed when the connection breaks.

``verify`` and ``replay`` open the database directly (``cli.db.database``):
``verify`` re-derives every link of the hash chain in one REPEATABLE READ
transaction (a consistent snapshot while the server keeps appending);
``replay`` rebuilds every view into shadow tables beside the live ones and
swaps them in (``registry.rebuild``): writers wait only for the last short
catch-up and the swap. ``replay --check`` builds the same shadows, compares
them with the live views and drops them.
"""

from __future__ import annotations

import asyncio
import collections
import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from artifactstore import errors
from artifactstore.cli.common import Progress, ServerOption, TokenOption, endpoint
from artifactstore.cli.db import ConfigOption, database
from artifactstore.client import AsyncClient

if TYPE_CHECKING:
    from artifactstore.models import EventInfo
    from artifactstore.registry.rebuild import RebuildReport

__all__ = ["app", "format_event"]

DEFAULT_LINES = 20

app = typer.Typer(help="The event log: tail, verify the hash chain, replay views.")


def format_event(item: dict[str, Any]) -> str:
    """One event on one line: seq, time, type, actor, payload."""
    payload = json.dumps(item.get("payload", {}), separators=(",", ":"), ensure_ascii=False)
    occurred = str(item.get("occurred_at", ""))[:19].replace("T", " ")
    return f"{item['seq']:>8}  {occurred}  {item['type']:<32}  {item.get('actor', '')}  {payload}"


def _emit(item: dict[str, Any], *, as_json: bool) -> None:
    line = json.dumps(item, ensure_ascii=False) if as_json else format_event(item)
    print(line, flush=True)


async def _tail(
    client: AsyncClient, after: int | None, lines: int, *, follow: bool, as_json: bool
) -> None:
    """Print the log after ``after`` (or its last ``lines`` events), then follow it."""
    position = after or 0
    window: collections.deque[EventInfo] | None = (
        collections.deque(maxlen=lines) if after is None else None
    )
    async for event in client.events(position):
        position = event.seq
        if window is None:
            _emit(event.to_json(), as_json=as_json)
        else:
            window.append(event)
    for event in window or ():
        _emit(event.to_json(), as_json=as_json)
    if follow:
        async for event in client.events(position, follow=True):
            _emit(event.to_json(), as_json=as_json)


@app.command("tail")
def tail_command(  # noqa: PLR0917 - typer passes every option as a parameter
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events as they happen.")
    ] = False,
    after: Annotated[
        int | None,
        typer.Option(min=0, metavar="SEQ", help="Print every event after this seq."),
    ] = None,
    lines: Annotated[
        int,
        typer.Option("--lines", "-n", min=0, help="Without --after: how many recent events."),
    ] = DEFAULT_LINES,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Print recent events (the last --lines, or all after --after); --follow for new ones."""

    async def run() -> None:
        with Progress():  # prints reconnects
            async with AsyncClient(endpoint=endpoint(server, token, retry_seconds=0)) as client:
                await _tail(client, after, lines, follow=follow, as_json=as_json)

    asyncio.run(run())


@app.command("verify")
def verify_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
    config: ConfigOption = None,
) -> None:
    """Re-derive the whole hash chain from the database; exit 1 at the first bad event."""
    from artifactstore.events import verify_chain  # noqa: PLC0415 - database commands load it

    async def run() -> dict[str, Any]:
        async with database(config) as db, db.engine.connect() as conn:
            snap = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with snap.begin():
                report = await verify_chain(snap)
        return {
            "ok": True,
            "events": report.count,
            "head_seq": report.head_seq,
            "head_hash": report.head_hash.hex(),
        }

    result = asyncio.run(run())
    if as_json:
        print(json.dumps(result))
    else:
        print(
            f"event chain ok: {result['events']} events,"
            f" head seq {result['head_seq']}, head hash {result['head_hash']}"
        )


@app.command("replay")
def replay_command(
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Rebuild beside the live views, compare, change nothing; exit 1 if they differ.",
        ),
    ] = False,
    batch: Annotated[
        int | None,
        typer.Option(min=1, help="Events folded per batch (bounds memory; default 20000)."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Rebuild every view from the whole event log while the server keeps writing."""
    from artifactstore.registry.rebuild import rebuild_views  # noqa: PLC0415
    from artifactstore.views import FOLD_BATCH  # noqa: PLC0415

    async def run() -> RebuildReport:
        async with database(config) as db:
            return await rebuild_views(db.engine, check=check, batch=batch or FOLD_BATCH)

    report = asyncio.run(run())
    locked = f"{report.locked_events} under the log lock for {report.locked_seconds:.2f} s"
    if not check:
        print(f"replayed {report.events} events into the views ({locked})")
        return
    if report.differ:
        raise errors.IntegrityError(
            f"replaying {report.events} events gives different views: {', '.join(report.differ)}",
            views=report.differ,
        )
    print(f"views match a replay of all {report.events} events (nothing changed)")
