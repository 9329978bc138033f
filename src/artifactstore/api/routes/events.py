"""``/v1/events``: the log as JSON pages and as a live Server-Sent Events stream."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from artifactstore.api.schemas import event_json
from artifactstore.api.services import ActorRead, ServicesDep
from artifactstore.errors import InvalidInputError
from artifactstore.events import read_events

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from artifactstore.api.services import Services

__all__ = ["router"]

router = APIRouter(prefix="/v1/events", tags=["events"])

MAX_SEQ = 2**63 - 1  # PostgreSQL bigint
_SEQ_DIGITS = len(str(MAX_SEQ))
After = Annotated[int, Query(ge=0, le=MAX_SEQ)]
KEEPALIVE_SECONDS = 15.0
STREAM_BATCH = 500


@router.get("", summary="Events after a seq")
async def list_events(
    services: ServicesDep,
    _actor: ActorRead,
    after: After = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Up to ``limit`` events with ``seq > after``; ``next_after`` continues."""
    async with services.registry.engine.connect() as conn:
        page = await read_events(conn, after=after, limit=limit)
    return {
        "items": [event_json(e) for e in page],
        "next_after": page[-1].seq if page else after,
    }


async def _follow(request: Request, services: Services, after: int) -> AsyncIterator[bytes]:
    position = after
    while not await request.is_disconnected():
        async with services.registry.engine.connect() as conn:
            page = await read_events(conn, after=position, limit=STREAM_BATCH)
        for event in page:
            data = json.dumps(event_json(event), separators=(",", ":"))
            yield f"id: {event.seq}\nevent: {event.type}\ndata: {data}\n\n".encode()
            position = event.seq
        if len(page) < STREAM_BATCH:
            yield b": keepalive\n\n"
            await services.notifier.wait_beyond(position, KEEPALIVE_SECONDS)


def _last_event_id(value: str | None) -> int | None:
    """The seq a reconnecting SSE client names; None when absent or empty.

    Raises:
        InvalidInputError: not ASCII digits of a seq in ``[0, 2**63)`` (a 400,
            before the stream starts: ``int('²')`` and bigint overflows were 500s).
    """
    if not value:
        return None
    if (
        not (value.isascii() and value.isdigit())
        or len(value) > _SEQ_DIGITS
        or int(value) > MAX_SEQ
    ):
        raise InvalidInputError(
            "Last-Event-ID must be the seq of an event (ASCII digits, at most 2**63 - 1)",
            value=value[:32],
        )
    return int(value)


@router.get("/stream", summary="Follow new events (text/event-stream)")
async def stream_events(
    request: Request, services: ServicesDep, _actor: ActorRead, after: After | None = None
) -> StreamingResponse:
    """Events after ``after`` (or ``Last-Event-ID``, or the current head) as they are appended."""
    start = after
    if start is None:
        start = _last_event_id(request.headers.get("last-event-id"))
    if start is None:
        async with services.registry.engine.connect() as conn:
            from artifactstore.events import last_seq  # noqa: PLC0415

            start = await last_seq(conn)
    return StreamingResponse(
        _follow(request, services, start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
