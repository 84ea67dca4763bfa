"""How many requests a worker takes on at once: a fixed cap, or one adapted from measured latency.

:class:`AdaptiveLimit` is a gradient limiter in the spirit of Netflix's concurrency-limits. It
compares the mean latency of the latest requests with the *baseline*, the latency of requests that
found the worker empty (nothing else in flight when they were admitted), and once per round of as
many completed requests as the cap (20 at most):

* when the round's mean exceeds ``tolerance`` times the baseline, requests queue inside the
  worker: the cap drops to the round's peak concurrency in proportion (``peak * tolerance *
  baseline / mean``, at most halved, and at least one below the cap), so fewer at once serve each
  one sooner;
* when latency stays within the tolerance and at least half of the cap is in use, the cap grows by
  one after every ``max(cap, 100)`` such requests: slowly, because each step up is a probe whose
  queueing the requests of that round pay for (a cap never used gives no evidence at all).

It starts at its upper bound, as permissive as no cap, and comes down only on evidence: a worker
whose latency does not grow with concurrency (I/O-bound routes) keeps a high cap, a route that
holds the event loop (whose requests can only take turns) settles at one or two. The baseline is a
moving average over about the last 20 requests that found the worker empty, so it follows an app
that really became slower (once the cap is low, the worker is empty often), and it does not drift
up under sustained load (a request admitted first runs at once). A worker that is never empty
(always many requests in flight) learns no baseline and keeps its cap. Latencies are measured
from admission to the end of the request (background tasks included: they hold the worker too).
"""

from __future__ import annotations

import math

__all__ = ["AdaptiveLimit", "FixedLimit", "Limit"]

_BASELINE_WEIGHT = 0.05  # about the last 20 requests that found the worker empty
_PROBE_EVERY = 100  # requests within the tolerance, at least, between two steps up
_ROUND = 20  # most requests of one round: a high cap under little traffic still decides every 20


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
    __slots__ = ("_count", "_good", "_peak", "_sum", "baseline", "cap", "high", "low", "tolerance")

    def __init__(self, low: int, high: int, tolerance: float, *, start: int | None = None) -> None:
        self.low = low
        self.high = high
        self.tolerance = tolerance
        self.cap = min(high, max(low, start if start is not None else high))
        self.baseline: float | None = None
        self._count = 0
        self._sum = 0.0
        self._peak = 0
        self._good = 0  # requests within the tolerance since the last change

    def completed(self, seconds: float, in_flight_before: int) -> None:
        """A request admitted when ``in_flight_before`` others were running took ``seconds``."""
        if in_flight_before == 0:
            baseline = self.baseline
            self.baseline = seconds if baseline is None else baseline + _BASELINE_WEIGHT * (seconds - baseline)
        self._count += 1
        self._sum += seconds
        if in_flight_before >= self._peak:
            self._peak = in_flight_before + 1
        cap = self.cap
        if self._count < min(cap, _ROUND):
            return
        count, mean, peak = self._count, self._sum / self._count, self._peak
        self._count, self._sum, self._peak = 0, 0.0, 0
        baseline = self.baseline
        allowed = math.inf if baseline is None else self.tolerance * baseline
        if mean > allowed:
            self._good = 0
            # From the concurrency that produced this latency, not from a cap far above it.
            shrunk = math.floor(min(cap, peak) * max(0.5, allowed / mean))
            self.cap = max(self.low, min(cap - 1, shrunk))
            return
        self._good += count
        if peak * 2 >= cap and self._good >= max(cap, _PROBE_EVERY):
            self._good = 0
            self.cap = min(self.high, cap + 1)


Limit = FixedLimit | AdaptiveLimit
