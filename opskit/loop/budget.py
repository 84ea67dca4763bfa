"""Warning lines of the feature: their logger, and a bounded rate (a token bucket that counts what it refuses)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from time import monotonic
from typing import Any

import structlog

__all__ = ["LineBudget", "logger"]


def logger() -> Any:
    """``opskit.loop``'s structlog logger, resolved when a line is written (lines are rare; tests capture them)."""
    return structlog.get_logger("opskit.loop")


class LineBudget:
    """At most ``per_minute`` lines a minute (bursts of as many), the refused ones counted.

    Thread-safe: the watchdog thread and the event loop share one budget.
    """

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = monotonic) -> None:
        self.capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._tokens = self.capacity
        self._clock = clock
        self._stamp = self._clock()
        self._lock = threading.Lock()
        self.suppressed = 0  # refused since the last line that was allowed
        self.suppressed_total = 0

    def take(self) -> int | None:
        """``None`` when the line must be dropped, else how many lines were dropped before it."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            if self._tokens < 1.0:
                self.suppressed += 1
                self.suppressed_total += 1
                return None
            self._tokens -= 1.0
            dropped, self.suppressed = self.suppressed, 0
            return dropped
