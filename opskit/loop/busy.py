"""The event loop's busy share: how much of the wall time the loop spent running callbacks.

Read on every lag probe from the loop thread's CPU time (``time.thread_time``, one cheap clock
read): CPU time spent by the loop's thread between two probes over the wall time between them. A
loop blocked off the CPU (``time.sleep``, a blocking socket read in an ``async def``) burns no CPU
but is no more available: the probe then runs late by as long, so the late part of the interval
counts as busy too. The share is smoothed (an exponentially weighted average over about a second)
so that a scrape sees the recent load, not one 50 ms window. Nothing runs per request.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from time import thread_time

from ..load import LoadReadings
from ..metrics.registry import GaugeChild

__all__ = ["LoopBusyShare"]


class LoopBusyShare:
    """Turns the probe's ticks into the loop's busy share (0..1), published to a gauge and ``readings``."""

    def __init__(
        self,
        interval: float,
        gauge: GaugeChild,
        readings: LoadReadings | None = None,
        *,
        smoothing: float = 1.0,
        cpu_clock: Callable[[], float] = thread_time,
    ) -> None:
        self.interval = interval
        self.share: float | None = None
        self._gauge = gauge
        self._readings = readings
        self._smoothing = smoothing
        self._cpu_clock = cpu_clock
        self._last: tuple[float, float] | None = None

    def reset(self) -> None:
        """Forget the previous tick (a new loop, or a forked child)."""
        self._last = None

    def sample(self, now: float) -> None:
        """One probe tick at ``now`` (monotonic seconds); call it on the loop's thread."""
        cpu = self._cpu_clock()
        last = self._last
        self._last = (now, cpu)
        if last is None:
            return
        wall = now - last[0]
        if wall <= 0:
            return
        busy = max(cpu - last[1], wall - self.interval)
        share = min(1.0, max(0.0, busy / wall))
        previous = self.share
        if previous is not None:
            share = previous + (1.0 - math.exp(-wall / self._smoothing)) * (share - previous)
        self.share = share
        self._gauge.set(share)
        if self._readings is not None:
            self._readings.loop_busy = share
