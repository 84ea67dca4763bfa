"""The embedded backend: one token bucket per key in this process, bounded by an LRU."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from .decision import Decision
from .rate import Rate

__all__ = ["MemoryBackend", "gcra"]


def gcra(
    tats: Sequence[float] | None, now: float, rates: Sequence[Rate], cost: int, force: bool = False
) -> tuple[Decision, list[float]]:
    """The token bucket as GCRA: each rate keeps a theoretical arrival time (TAT).

    A request of ``cost`` tokens passes when, for every rate, ``max(tat, now) + cost * interval``
    lies no further than ``burst * interval`` ahead of ``now``. Returns the decision and the TATs to
    store (unchanged when rejected: a rejected request costs nothing). ``force`` spends the cost
    whatever the verdict: the TATs move past the burst bound (the bucket is in debt, and refuses
    requests until the debt has refilled); the decision still says whether it would have passed.
    The Redis script is the same algorithm in Lua.
    """
    starts = [now if tats is None or i >= len(tats) or tats[i] < now else tats[i] for i in range(len(rates))]
    ends = [start + cost * rate.interval for start, rate in zip(starts, rates, strict=False)]
    allowed = all(end - now <= rate.burst * rate.interval + 1e-9 for end, rate in zip(ends, rates, strict=False))
    final = ends if allowed or force else starts
    best = 0
    best_remaining = -1
    retry = 0.0
    for i, rate in enumerate(rates):
        remaining = int((rate.burst * rate.interval - (final[i] - now)) / rate.interval + 1e-9)
        if best_remaining < 0 or remaining < best_remaining:
            best, best_remaining = i, remaining
        if not allowed:
            retry = max(retry, ends[i] - now - rate.burst * rate.interval)
    decision = Decision(
        outcome="allowed" if allowed else "limited",
        rate=rates[best],
        remaining=max(0, best_remaining),
        retry_after=retry,
        reset=max(0.0, final[best] - now),
    )
    return decision, final


class MemoryBackend:
    """Per-process buckets with the same semantics as the Redis backend.

    Memory stays bounded: at most ``max_keys`` buckets, the least recently used dropped first
    (a dropped bucket was either full again or belonged to the quietest client).
    """

    shared = False

    def __init__(self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def decide(self, key: str, rates: Sequence[Rate], cost: int = 1, *, force: bool = False) -> Decision:
        """Take ``cost`` tokens from the bucket ``key`` if every rate has them (always, with ``force``)."""
        buckets = self._buckets
        now = self._clock()
        tats = buckets.get(key)
        if len(rates) == 1 and not force:
            return self._decide_one(key, tats, now, rates[0], cost)
        decision, final = gcra(tats, now, rates, cost, force)
        if decision.allowed or force:
            buckets[key] = final
            buckets.move_to_end(key)
            if len(buckets) > self.max_keys:
                buckets.popitem(last=False)
        return decision

    def _decide_one(self, key: str, tats: list[float] | None, now: float, rate: Rate, cost: int) -> Decision:
        # gcra() unrolled for the common single-rate policy: this runs on every request.
        interval = rate.interval
        capacity = rate.burst * interval
        start = tats[0] if tats is not None and tats[0] > now else now
        end = start + cost * interval
        if end - now <= capacity + 1e-9:
            buckets = self._buckets
            buckets[key] = [end]
            buckets.move_to_end(key)
            if len(buckets) > self.max_keys:
                buckets.popitem(last=False)
            return Decision("allowed", rate, int((capacity - (end - now)) / interval + 1e-9), 0.0, end - now)
        remaining = max(0, int((capacity - (start - now)) / interval + 1e-9))
        return Decision("limited", rate, remaining, end - now - capacity, start - now)
