"""Event-loop lag: a timer the loop schedules for itself, and how late it runs.

Every ``interval`` seconds a callback scheduled with ``loop.call_later`` records how much later
than due it ran: time the loop spent on other work (or blocked) before it could get to it. That is
the lag every request's callbacks see at that moment. The same timer is the loop's heartbeat for
the watchdog thread: ``due`` is when the loop is expected back, so a ``due`` far in the past means
the loop has not come back since. One timer per interval (a heap push, a histogram update) is all
it costs; nothing runs per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import monotonic

from .budget import LineBudget, logger
from .metrics import LoopMetrics

__all__ = ["LagProbe"]


class LagProbe:
    """Measures the lag of ``loop`` every ``interval`` seconds; ``samplers`` run after each probe.

    ``due`` (read by the watchdog thread) is when the next probe should run; ``late`` is the
    ``(due, ran_at)`` of the latest probe that ran at least ``late_after`` seconds late.
    """

    def __init__(
        self,
        interval: float,
        metrics: LoopMetrics,
        *,
        late_after: float = float("inf"),
        samplers: tuple[Callable[[float], None], ...] = (),
    ) -> None:
        self.interval = interval
        self.late_after = late_after
        self.due: float | None = None
        self.late: tuple[float, float] | None = None
        self._metrics = metrics
        self._lag = metrics.lag.labels()
        self._current = metrics.current_lag.labels()
        self._samplers = samplers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._errors = LineBudget(1)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start probing ``loop`` (call it on the loop's thread)."""
        self.stop()
        self._loop = loop
        self.due = monotonic() + self.interval
        self._handle = loop.call_later(self.interval, self._probe)

    def stop(self) -> None:
        self.due = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _probe(self) -> None:
        now = monotonic()
        due = self.due
        loop = self._loop
        if due is None or loop is None:
            return
        # Rescheduled first: a failing update below must not stop the heartbeat.
        self.due = now + self.interval
        self._handle = loop.call_later(self.interval, self._probe)
        lag = now - due if now > due else 0.0
        if lag >= self.late_after:
            self.late = (due, now)
        try:
            self._lag.observe(lag)
            self._current.set(lag)
            for sample in self._samplers:
                sample(now)
        except Exception as exc:
            if self._errors.take() is not None:
                logger().error("event-loop probe failed; lag keeps being measured", exc_info=exc)
