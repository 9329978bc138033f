"""Which server answers the client library retries (``client.transport.is_retryable``)."""

from __future__ import annotations

import pytest

from artifactstore.client.transport import is_retryable
from artifactstore.errors import RequestTimeoutError
from artifactstore.protocol import error_body, error_from_body


@pytest.mark.parametrize(
    ("status", "body", "retry"),
    [
        (408, error_body("request_timeout", "no request body bytes arrived for 60 s"), True),
        (408, "request head not complete within 30 s", True),  # the connection layer's text
        (503, "too many connections; try again later", True),
        (503, error_body("backend_unavailable", "no copy could be read"), True),
        (400, error_body("invalid_input", "bad"), False),
        (431, "request head longer than 65536 bytes", False),
    ],
)
def test_stalled_and_unavailable_answers_are_retried(
    status: int, body: object, retry: bool
) -> None:
    """A 408 (the request stalled) and a 503 are retried; a client error is not."""
    exc = error_from_body(status, body)
    assert is_retryable(exc) is retry
    if status == 408:
        assert isinstance(exc, RequestTimeoutError)
