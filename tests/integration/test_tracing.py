"""W3C traceparent through the real app: continued in, returned out, logged; off by default."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from typing import TYPE_CHECKING

import httpx
import pytest

from artifactstore.api.app import create_app
from artifactstore.config import TracingSettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from artifactstore.config import Settings
    from artifactstore.registry import Registry

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
ON, OFF = TracingSettings(enabled=True), TracingSettings()
_OURS = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


@pytest.fixture
async def serve(
    settings: Settings, registry: Registry
) -> AsyncIterator[Callable[[TracingSettings], httpx.AsyncClient]]:
    """Clients of the real app with tracing on or off (lifespans closed afterwards)."""
    stack: list[httpx.AsyncClient] = []

    def make(tracing: TracingSettings) -> httpx.AsyncClient:
        traced = dataclasses.replace(settings, tracing=tracing)
        app = create_app(traced, registry=registry, host="127.0.0.1", bootstrap_token=False)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        )
        stack.append(client)
        return client

    yield make
    for client in stack:
        await client.aclose()


def _logged(caplog: pytest.LogCaptureFixture) -> dict[str, object]:
    lines = [r.getMessage() for r in caplog.records if r.name == "artifactstore.access"]
    logged: dict[str, object] = json.loads(lines[-1])
    return logged


async def test_an_incoming_trace_is_continued_returned_and_logged(
    serve: Callable[[TracingSettings], httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    """The answer names the caller's trace with a span of its own; the log line has the trace."""
    caplog.set_level(logging.INFO, logger="artifactstore.access")
    client = serve(ON)
    r = await client.get("/healthz", headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
    match = _OURS.fullmatch(r.headers["traceparent"])
    assert match is not None, r.headers["traceparent"]
    assert match.group(1) == TRACE
    assert match.group(2) != PARENT
    assert match.group(3) == "01"
    assert _logged(caplog)["trace"] == TRACE


@pytest.mark.parametrize(
    "header",
    [
        None,
        f"00-{TRACE.upper()}-{PARENT}-01",
        f"00-{'0' * 32}-{PARENT}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"ff-{TRACE}-{PARENT}-01",
        f"00-{TRACE}-{PARENT}-01-extra",
        "garbage",
    ],
)
async def test_no_usable_traceparent_starts_a_new_trace(
    serve: Callable[[TracingSettings], httpx.AsyncClient], header: str | None
) -> None:
    """Absent or malformed (per the W3C rules) headers start a fresh, valid trace."""
    client = serve(ON)
    r = await client.get("/healthz", headers={"traceparent": header} if header else {})
    match = _OURS.fullmatch(r.headers["traceparent"])
    assert match is not None, r.headers["traceparent"]
    assert match.group(1) not in {TRACE, "0" * 32}


async def test_a_later_version_with_more_fields_is_continued(
    serve: Callable[[TracingSettings], httpx.AsyncClient],
) -> None:
    """A future version's extra fields are ignored and its trace continued, as the spec asks."""
    r = await serve(ON).get("/healthz", headers={"traceparent": f"01-{TRACE}-{PARENT}-00-x"})
    assert r.headers["traceparent"].startswith(f"00-{TRACE}-")
    assert r.headers["traceparent"].endswith("-00")


async def test_tracing_is_off_by_default(
    serve: Callable[[TracingSettings], httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    """Without [tracing] enabled, no traceparent goes out and the log line has no trace."""
    caplog.set_level(logging.INFO, logger="artifactstore.access")
    r = await serve(OFF).get("/healthz", headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
    assert "traceparent" not in r.headers
    assert "trace" not in _logged(caplog)
