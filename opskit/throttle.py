"""Logging at a bounded rate: one line per reason per interval, with the count of those held back."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ThrottledLog"]


class ThrottledLog:
    """At most one warning per reason every ``interval`` seconds, with the count of those held back.

    ``logger`` is a stdlib logger (the count goes in ``extra``) or a structlog logger (keywords).
    """

    def __init__(self, logger: Any, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, reason: str) -> int | None:
        """``None`` when ``reason`` spoke less than ``interval`` ago (counted), else the count held back."""
        now = self._clock()
        last = self._last.get(reason)
        if last is not None and now - last < self.interval:
            self._held[reason] = self._held.get(reason, 0) + 1
            return None
        if len(self._last) >= 1000 and reason not in self._last:
            self._last.clear()  # reasons come from a fixed set; a bound all the same
        self._last[reason] = now
        return self._held.pop(reason, 0)

    def warning(self, reason: str, message: str, **fields: Any) -> bool:
        """Log ``message`` unless ``reason`` was logged less than ``interval`` ago; True when written."""
        suppressed = self.allow(reason)
        if suppressed is None:
            return False
        if isinstance(self.logger, logging.Logger):
            self.logger.warning(message, extra={"reason": reason, "suppressed": suppressed, **fields})
        else:
            self.logger.warning(message, reason=reason, suppressed=suppressed, **fields)
        return True
