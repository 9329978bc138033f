"""W3C Trace Context (``traceparent``) for the REST API: follow one request across replicas.

When ``[tracing] enabled = true``, each request continues the trace named by
an incoming ``traceparent`` header (https://www.w3.org/TR/trace-context/,
section 3.2: ``version-traceid-parentid-flags``), or starts a new one when
the header is absent or malformed, gets a span id of its own, answers with
``traceparent: 00-<trace id>-<span id>-<flags>`` and writes the trace id on
its access-log line (``api.metrics``). This module only parses and formats
the header; it does not export spans (no OpenTelemetry SDK) and does not
propagate the context into PostgreSQL or S3 calls.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

__all__ = ["HEADER", "TraceContext"]

HEADER = "traceparent"

_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_SAMPLED = "01"


@dataclass(frozen=True, slots=True)
class TraceContext:
    """This request's place in a trace: the trace it belongs to and its own span."""

    trace_id: str
    span_id: str
    flags: str
    parent_id: str | None = None

    @classmethod
    def continuing(cls, header: bytes | None) -> TraceContext:
        """The incoming ``traceparent``'s trace with a new span, or a new trace when unusable.

        Refused as the spec says: an unknown version ``ff``, all-zero ids, a
        version-00 header with anything after the flags, any upper-case hex.
        """
        span = os.urandom(8).hex()
        match = _TRACEPARENT.fullmatch(header.strip()) if header is not None else None
        if match is not None:
            version, trace, parent, flags = (g.decode() for g in match.groups()[:4])
            extra = match.group(5)
            if (
                version != "ff"
                and not (version == "00" and extra)
                and trace != _ZERO_TRACE
                and parent != _ZERO_SPAN
            ):
                return cls(trace, span, flags, parent)
        return cls(os.urandom(16).hex(), span, _SAMPLED)

    def header(self) -> bytes:
        """The ``traceparent`` naming this request's span, for the response (version 00)."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}".encode()
