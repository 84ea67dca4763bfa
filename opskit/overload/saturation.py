"""One saturation signal per worker: how close it is to whatever limits it first.

``saturation = max(in_flight / cap, threadpool_busy / threadpool_size, event_loop_busy)``, each in
0..1. The in-flight term counts only with a cap (``OPSKIT_MAX_IN_FLIGHT``); the other two come from
the runtime-health feature (``OPSKIT_RUNTIME_ENABLED``) through :mod:`opskit.load`, and count only
while it measures them. The in-flight and thread-pool terms are averaged like the loop's busy share
(exponentially, over about a second): a scrape sees the recent load, not one instant. The largest
term wins because a worker is as saturated as its scarcest resource: a blocked loop is not helped
by free threads. Sampled a few times a second by a timer on the loop, never per request.
"""

from __future__ import annotations

import math

from ..load import LoadReadings

__all__ = ["Saturation"]


class Saturation:
    """The smoothed terms of the signal and their maximum."""

    __slots__ = ("_in_flight", "_last", "_pool", "_readings", "_smoothing", "value")

    def __init__(self, readings: LoadReadings, *, smoothing: float = 1.0) -> None:
        self.value = 0.0
        self._readings = readings
        self._smoothing = smoothing
        self._in_flight: float | None = None
        self._pool: float | None = None
        self._last: float | None = None

    def sample(self, now: float, in_flight: int, cap: int | None) -> float:
        """Update from the state at ``now`` (monotonic seconds); ``cap`` None: no cap. Returns the signal."""
        weight = 1.0 if self._last is None else 1.0 - math.exp(-max(0.0, now - self._last) / self._smoothing)
        self._last = now
        if cap:
            self._in_flight = _smooth(self._in_flight, min(1.0, in_flight / cap), weight)
        pool = self._readings.pool_share
        if pool is not None:
            self._pool = _smooth(self._pool, pool, weight)
        terms = [t for t in (self._in_flight, self._pool, self._readings.loop_busy) if t is not None]
        self.value = min(1.0, max(terms, default=0.0))
        return self.value


def _smooth(previous: float | None, value: float, weight: float) -> float:
    return value if previous is None else previous + weight * (value - previous)
