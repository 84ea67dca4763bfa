"""Failure handling helpers: a circuit breaker and a log that speaks at a bounded rate."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["CircuitBreaker", "ThrottledLog"]


class CircuitBreaker:
    """Stops calling a failing backend for ``open_seconds`` after ``failures`` consecutive failures.

    After the pause calls go through again; the first failure then reopens it at once.
    """

    def __init__(
        self, failures: int = 3, open_seconds: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = failures
        self.open_seconds = open_seconds
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0

    @property
    def closed(self) -> bool:
        """True when calls may go to the backend."""
        return self._open_until == 0.0 or self._clock() >= self._open_until

    def success(self) -> None:
        self._failures = 0
        self._open_until = 0.0

    def failure(self) -> bool:
        """Record a failure; True when this one opened the breaker."""
        self._failures += 1
        if self._failures >= self.threshold and self.closed:
            self._open_until = self._clock() + self.open_seconds
            return True
        return False


class ThrottledLog:
    """At most one warning per reason every ``interval`` seconds, with the count of those held back."""

    def __init__(
        self, logger: logging.Logger, interval: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, reason: str, message: str) -> bool:
        """Log ``message`` unless ``reason`` was logged less than ``interval`` ago; True when written."""
        now = self._clock()
        last = self._last.get(reason)
        if last is not None and now - last < self.interval:
            self._held[reason] = self._held.get(reason, 0) + 1
            return False
        self._last[reason] = now
        suppressed = self._held.pop(reason, 0)
        self.logger.warning(message, extra={"reason": reason, "suppressed": suppressed})
        return True
