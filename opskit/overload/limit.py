"""How many requests a worker takes on at once: a fixed cap, or one adapted from measured latency.

:class:`AdaptiveLimit` is an AIMD limiter in the spirit of Netflix's concurrency-limits. It
compares the mean latency of the latest requests with the latency the worker has when it is not
queueing (its *baseline*) and:

* lowers the cap by 10 % when the recent mean exceeds ``tolerance`` times the baseline (requests
  queue inside the worker: fewer at once serve each one sooner);
* raises it by one when latency is fine and the cap was in use (at least half of it taken): a
  worker that never uses its cap has no evidence that more would be fine;
* decides once per window of as many completed requests as the cap (about one round of
  requests), so one slow request moves nothing and a change is seen before the next.

The baseline is a moving average of requests admitted while fewer than half of the cap were in
flight (the worker was not queueing them). Under sustained overload there are none, so the
baseline holds at what the worker showed before; once the cap is low, lightly loaded requests are
seen again and the baseline follows an app that really became slower. Latencies are measured from
admission to the end of the request (background tasks included: they hold the worker too).
"""

from __future__ import annotations

import math

__all__ = ["AdaptiveLimit", "FixedLimit", "Limit"]

_DECREASE = 0.9
_BASELINE_WEIGHT = 0.05  # about the last 20 lightly loaded requests


class FixedLimit:
    """``OPSKIT_MAX_IN_FLIGHT=N``: the cap is ``N``, whatever happens."""

    adaptive = False
    __slots__ = ("cap",)

    def __init__(self, cap: int) -> None:
        self.cap = cap

    def completed(self, seconds: float, in_flight_before: int) -> None:
        """A request admitted when ``in_flight_before`` others were running took ``seconds``."""


class AdaptiveLimit:
    """``OPSKIT_MAX_IN_FLIGHT=auto``: a cap between ``low`` and ``high``, adapted from latency (see the module)."""

    adaptive = True
    __slots__ = ("_count", "_limit", "_peak", "_sum", "baseline", "cap", "high", "low", "tolerance")

    def __init__(self, low: int, high: int, tolerance: float, *, start: int | None = None) -> None:
        self.low = low
        self.high = high
        self.tolerance = tolerance
        self._limit = float(min(high, max(low, start if start is not None else 10)))
        self.cap = int(self._limit)
        self.baseline: float | None = None
        self._count = 0
        self._sum = 0.0
        self._peak = 0

    def completed(self, seconds: float, in_flight_before: int) -> None:
        """A request admitted when ``in_flight_before`` others were running took ``seconds``."""
        cap = self.cap
        if in_flight_before * 2 < cap:
            baseline = self.baseline
            self.baseline = seconds if baseline is None else baseline + _BASELINE_WEIGHT * (seconds - baseline)
        self._count += 1
        self._sum += seconds
        if in_flight_before + 1 > self._peak:
            self._peak = in_flight_before + 1
        if self._count < cap:
            return
        mean = self._sum / self._count
        baseline = self.baseline
        if baseline is not None and mean > self.tolerance * baseline:
            self._limit = max(float(self.low), self._limit * _DECREASE)
        elif self._peak * 2 >= cap:
            self._limit = min(float(self.high), self._limit + 1.0)
        self.cap = max(self.low, math.floor(self._limit + 1e-9))
        self._count = 0
        self._sum = 0.0
        self._peak = 0


Limit = FixedLimit | AdaptiveLimit
