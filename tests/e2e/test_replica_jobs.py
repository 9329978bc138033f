"""Periodic jobs across real replicas: one runs upload expiry at a time; a killed one hands it on.

Two real ``artifactstore serve`` processes on one database. The first stops
inside the expiry job while it holds the job's advisory lock
(``ARTIFACTSTORE_TEST_PAUSE_AT=job-held:upload-expiry``); the second must
skip the job (an expired session stays) until the first is killed with
SIGKILL, and then run it (the session goes).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import create_async_engine

from artifactstore.db.tables import upload_sessions
from artifactstore.testpoint import PAUSE_ENV

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.e2e.serverproc import Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

JOB = "upload-expiry"


def job_ticks(server: Server, outcome: str) -> float:
    """``artifactstore_periodic_job_ticks_total`` of the expiry job on ``server``."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "artifactstore_periodic_job_ticks_total" and sample.labels == {
                "job": JOB,
                "outcome": outcome,
            }:
                return sample.value
    return 0.0


async def _session_state(database_url: str, session_id: uuid.UUID) -> str:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            expired = await conn.scalar(
                sa.select(upload_sessions.c.expires_at <= sa.func.now()).where(
                    upload_sessions.c.id == session_id
                )
            )
    finally:
        await engine.dispose()
    return "gone" if expired is None else ("expired" if expired else "live")


def test_upload_expiry_passes_to_another_replica_when_its_holder_is_killed(
    start_server: Callable[..., Server], tmp_path: Path, database_url: str
) -> None:
    """B skips expiry while A holds the job; once A is killed -9, B's next tick runs it."""
    config = tmp_path / "jobs.toml"
    config.write_text("[uploads]\nexpiry_seconds = 1\nexpiry_interval_seconds = 1\n")
    holder = start_server(config=config, extra_env={PAUSE_ENV: f"job-held:{JOB}"})
    paused = f"paused at job-held:{JOB}"
    holder.wait_until(
        "A never held the expiry job", lambda: paused in holder.log_path.read_text(errors="replace")
    )
    other = start_server(config=config)
    token = other.env["ARTIFACTSTORE_TOKEN"]
    made = httpx.post(
        f"{other.url}/v1/uploads", json={}, headers={"Authorization": f"Bearer {token}"}
    )
    assert made.status_code == 201, made.text
    session_id = uuid.UUID(made.headers["location"].rstrip("/").rsplit("/", 1)[-1])

    def state() -> str:
        return asyncio.run(_session_state(database_url, session_id))

    other.wait_until("the session never expired", lambda: state() != "live")
    assert state() == "expired"  # not yet removed: B skips the job A holds
    skipped = job_ticks(other, "skipped")
    other.wait_until("B stopped ticking", lambda: job_ticks(other, "skipped") >= skipped + 2)
    assert state() == "expired"  # B ticked twice after the expiry and left it: A holds the job
    assert job_ticks(other, "ran") == 0

    holder.kill()
    other.wait_until("B never took the job over", lambda: state() == "gone")
    assert job_ticks(other, "ran") >= 1
