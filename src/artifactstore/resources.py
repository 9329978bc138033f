"""Resources written once: ``async with`` for resource holders, process-wide thread pools.

Backends, the database handle and the registry each release what they hold
in ``aclose``; ``AsyncCloseable`` gives them ``async with`` on top (STYLE
section 2: every resource-holding class supports ``async with``).
``shared_pool`` hands out the few long-lived thread pools (sha256 beside
blake3, direct writes) so each is created once, on first use.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["AsyncCloseable", "shared_pool"]

_pools: dict[str, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def shared_pool(name: str, workers: int) -> ThreadPoolExecutor:
    """The process-wide pool ``name`` (also its threads' name prefix), created on first use."""
    with _pools_lock:
        pool = _pools.get(name)
        if pool is None:
            pool = _pools[name] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        return pool


class AsyncCloseable:
    """Mixin: ``async with obj:`` returns ``obj`` and awaits ``obj.aclose()`` on the way out."""

    async def aclose(self) -> None:
        """Release everything; subclasses override."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
