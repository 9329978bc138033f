"""Progress of a transfer as a callback: the client counts, the caller shows it.

The CLI turns each ``TransferProgress`` into a rich bar; a program may log
it or ignore it (the default). Calls may come from worker threads (hashing)
as well as the event loop, so the meter serialises them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Meter", "ProgressCallback", "TransferProgress"]


@dataclass(frozen=True, slots=True)
class TransferProgress:
    """Where one phase of a transfer stands: ``done`` of ``total`` bytes."""

    phase: str
    """``hashing``, ``uploading`` or ``downloading``."""
    done: int
    total: int


ProgressCallback: TypeAlias = "Callable[[TransferProgress], None]"
"""Called with every change; may be called from worker threads."""


class Meter:
    """Counts the bytes of one phase and reports every change to the callback."""

    def __init__(
        self, phase: str, total: int, callback: Callable[[TransferProgress], None] | None
    ) -> None:
        self.phase = phase
        self.total = total
        self.done = 0
        self._callback = callback
        self._lock = threading.Lock()
        self.advance(0)

    def advance(self, amount: int) -> None:
        """Move by ``amount`` bytes (negative: bytes sent but not acknowledged, to send again)."""
        if self._callback is None:
            return
        with self._lock:
            self.done += amount
            self._callback(TransferProgress(self.phase, self.done, self.total))
