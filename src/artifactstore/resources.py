"""``async with`` for every resource-holding object, written once.

Backends, the database handle and the registry each release what they hold
in ``aclose``; this mixin gives them ``async with`` on top (STYLE section 2:
every resource-holding class supports ``async with``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["AsyncCloseable"]


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
