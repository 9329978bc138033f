"""Prometheus metrics and the access log: one ASGI middleware, one registry per app.

Counted per request: route (the template, not the raw path, so cardinality
stays bounded), method, status, latency, bytes in and out. Gauges that
describe state (active upload sessions, head of the event log, storage
locations by backend and state) are refreshed from the database when
``/metrics`` is scraped. Each request also writes one JSON line to the
``artifactstore.access`` logger; no header or body content is logged, so no
token ever reaches a log. Same-host handoffs (``api.handoff``) are counted and
logged the same way (``Metrics.record``), with method ``HANDOFF``.

Several replicas (DESIGN section 13): counters and histograms count this
process's own work, so summing them across replicas is right. The gauges read
from the database describe the whole deployment and every replica reports
the same value: aggregate them with ``max``, never ``sum`` (their HELP text
says so). They stay on every replica, rather than on one elected replica, so
a series never jumps between replicas or vanishes while a lock changes hands.
``artifactstore_replica_info`` is 1 per live replica: ``count`` it.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

import artifactstore
from artifactstore.api.tracing import HEADER, TraceContext

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DEPLOYMENT_WIDE", "Metrics", "MetricsMiddleware"]

access_log = logging.getLogger("artifactstore.access")

#: The HELP suffix of every gauge that describes the whole deployment.
DEPLOYMENT_WIDE = " (deployment-wide, from the database: the same on every replica; max, not sum)"


class Metrics:
    """The app's metric families, in a registry of their own."""

    def __init__(self, replica: str | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.replica = replica or uuid.uuid4().hex[:12]
        Gauge(
            "artifactstore_replica_info",
            "1 per running replica (count it); replica is host:port or an id made at start",
            ["replica", "version"],
            registry=r,
        ).labels(self.replica, artifactstore.__version__).set(1)
        self.job_ticks = Counter(
            "artifactstore_periodic_job_ticks",
            "Ticks of periodic jobs on this replica: ran, skipped (another replica had it), failed",
            ["job", "outcome"],
            registry=r,
        )
        self.requests = Counter(
            "artifactstore_http_requests",
            "HTTP requests",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "artifactstore_http_request_duration_seconds",
            "HTTP request latency",
            ["route", "method"],
            buckets=(
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
            ),
            registry=r,
        )
        self.bytes_in = Counter("artifactstore_http_bytes_in", "Request body bytes", registry=r)
        self.bytes_out = Counter("artifactstore_http_bytes_out", "Response body bytes", registry=r)
        self.upload_resumes = Counter(
            "artifactstore_upload_resumes",
            "Appends (PATCH or handoff) that continued a session at a non-zero offset",
            registry=r,
        )
        self.upload_resumed_offset = Gauge(
            "artifactstore_upload_last_resumed_offset_bytes",
            "Offset of the most recent append to this replica that continued a session",
            registry=r,
        )
        self.active_uploads = Gauge(
            "artifactstore_upload_sessions_active",
            "Upload sessions not yet expired" + DEPLOYMENT_WIDE,
            registry=r,
        )
        self.events_head = Gauge(
            "artifactstore_events_head_seq",
            "Events appended: the newest seq in the log" + DEPLOYMENT_WIDE,
            registry=r,
        )
        self.locations = Gauge(
            "artifactstore_storage_locations",
            "Storage locations by backend and state" + DEPLOYMENT_WIDE,
            ["backend", "state"],
            registry=r,
        )

    def job_ticked(self, job: str, outcome: str) -> None:
        """Count one tick of a periodic job (``registry.periodic``)."""
        self.job_ticks.labels(job, outcome).inc()

    def appended_at(self, offset: int) -> None:
        """Note an append to a session at ``offset`` (PATCH or handoff): > 0 is a resume."""
        if offset > 0:
            self.upload_resumes.inc()
            self.upload_resumed_offset.set(offset)

    def record(
        self,
        *,
        method: str,
        path: str,
        route: str,
        status: int,
        seconds: float,
        received: int,
        sent: int,
        client: str,
        trace: str | None = None,
    ) -> None:
        """Count one request and write its access-log line (HTTP or handoff)."""
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)
        self.bytes_in.inc(received)
        self.bytes_out.inc(sent)
        line = {
            "method": method,
            "path": path,
            "route": route,
            "status": status,
            "ms": round(seconds * 1000, 2),
            "in": received,
            "out": sent,
            "client": client,
        }
        if trace is not None:
            line["trace"] = trace
        access_log.info(json.dumps(line, separators=(",", ":")))


class MetricsMiddleware:
    """Pure ASGI middleware (no body buffering, so streaming stays streaming).

    With ``tracing``, each request continues or starts a W3C trace
    (``api.tracing``): the response carries ``traceparent``, the log line the trace id.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, *, tracing: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count and log one request."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        sent = 0
        received = 0
        trace = TraceContext.continuing(_header(scope, HEADER)) if self.tracing else None

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                if trace is not None:
                    headers = [*message.get("headers", ()), (HEADER.encode(), trace.header())]
                    message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            self.metrics.record(
                method=scope["method"],
                path=scope["path"],
                route=getattr(route, "path", None) or "unmatched",
                status=status,
                seconds=elapsed,
                received=received,
                sent=sent,
                client=(scope.get("client") or ("", 0))[0],
                trace=trace.trace_id if trace is not None else None,
            )


def _header(scope: Scope, name: str) -> bytes | None:
    wanted = name.encode()
    for key, value in scope["headers"]:
        if key.lower() == wanted:
            return bytes(value)
    return None
