"""A pause point for crash tests: the server stops at a named moment, to be killed there.

``ARTIFACTSTORE_TEST_PAUSE_AT=<point>`` in the server's environment makes the
code passing ``pause_at(<point>)`` print one line to stderr and wait forever,
so a test can ``kill -9`` the process at exactly that moment (tests/e2e
/test_finalize_crash.py). Unset - always, outside tests - it is one
environment look-up. The points are listed in docs/design/0006.
"""

from __future__ import annotations

import asyncio
import os
import sys

__all__ = ["PAUSE_ENV", "pause_at"]

PAUSE_ENV = "ARTIFACTSTORE_TEST_PAUSE_AT"


async def pause_at(point: str) -> None:
    """Wait forever when ``PAUSE_ENV`` names ``point``; return at once otherwise."""
    if os.environ.get(PAUSE_ENV) != point:
        return
    sys.stderr.write(f"{PAUSE_ENV}: paused at {point}\n")
    sys.stderr.flush()
    await asyncio.Event().wait()
