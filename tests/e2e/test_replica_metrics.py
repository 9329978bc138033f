"""Metrics of several replicas: what to sum, what to max, and how many replicas there are.

Two real ``artifactstore serve`` processes on one database, each scraped at
``/metrics`` as Prometheus would (docs/OPERATOR.md "Monitoring").
"""

from __future__ import annotations

import functools
import socket
from typing import TYPE_CHECKING

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import artifactstore

if TYPE_CHECKING:
    from collections.abc import Callable

    from prometheus_client import Metric
    from tests.e2e.serverproc import Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEPLOYMENT_GAUGES = (
    "artifactstore_upload_sessions_active",
    "artifactstore_events_head_seq",
    "artifactstore_storage_locations",
)


def scrape(server: Server) -> dict[str, Metric]:
    """The server's metric families by name."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(families: dict[str, Metric], sample_name: str, **labels: str) -> float:
    """One sample's value (0 when absent, as Prometheus treats a counter never touched)."""
    family = families[sample_name.removesuffix("_total")]
    for sample in family.samples:
        if sample.name == sample_name and sample.labels == labels:
            return sample.value
    return 0.0


def healthz_count(families: dict[str, Metric]) -> float:
    """Requests to ``/healthz`` answered 200 by one replica."""
    return value(
        families, "artifactstore_http_requests_total", route="/healthz", method="GET", status="200"
    )


def test_two_replicas_count_themselves_once_and_share_deployment_gauges(
    start_server: Callable[..., Server],
) -> None:
    """replica_info is 1 per replica; request counters sum; deployment gauges agree (take max)."""
    first, second = start_server(), start_server()
    token = first.env["ARTIFACTSTORE_TOKEN"]
    made = httpx.post(
        f"{first.url}/v1/uploads", json={}, headers={"Authorization": f"Bearer {token}"}
    )
    assert made.status_code == 201, made.text
    before = [healthz_count(scrape(s)) for s in (first, second)]
    for _ in range(3):
        assert httpx.get(f"{first.url}/healthz").status_code == 200
    assert httpx.get(f"{second.url}/healthz").status_code == 200
    scraped = [scrape(s) for s in (first, second)]

    # Counters are per replica: their sum over replicas is the deployment's count.
    after = [healthz_count(f) for f in scraped]
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 1]

    # One info series per replica, told apart by its replica label: count() counts replicas.
    infos = [s for f in scraped for s in f["artifactstore_replica_info"].samples]
    assert [s.value for s in infos] == [1, 1]
    assert {s.labels["version"] for s in infos} == {artifactstore.__version__}
    replicas = {s.labels["replica"] for s in infos}
    assert replicas == {f"{socket.gethostname()}:{s.port}" for s in (first, second)}

    # Deployment-wide gauges: the same value on both (summing would say 2 sessions),
    # and their HELP says to take the max.
    sessions = [value(f, "artifactstore_upload_sessions_active") for f in scraped]
    assert sessions == [1, 1]
    heads = [value(f, "artifactstore_events_head_seq") for f in scraped]
    assert heads[0] == heads[1]
    for name in DEPLOYMENT_GAUGES:
        assert all("max, not sum" in f[name].documentation for f in scraped), name

    # The staging sweep is a shared job: every replica runs it (from its start), none skips it.
    def sweeps(server: Server, outcome: str) -> float:
        return value(
            scrape(server),
            "artifactstore_periodic_job_ticks_total",
            job="upload-staging-sweep",
            outcome=outcome,
        )

    def swept(server: Server) -> bool:
        return sweeps(server, "ran") >= 1

    for server in (first, second):
        server.wait_until("the staging sweep never ran", functools.partial(swept, server))
        assert sweeps(server, "skipped") == 0
