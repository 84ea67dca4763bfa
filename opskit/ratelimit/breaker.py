"""A circuit breaker: stop calling a failing backend for a while."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["CircuitBreaker"]


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
