"""anyio's default thread pool: busy threads, waiting calls, its size, and how long calls wait.

``def`` endpoints, sync dependencies and ``run_in_threadpool`` all borrow a token of anyio's default
``CapacityLimiter`` of the running loop (40 unless ``OPSKIT_THREADPOOL_SIZE`` says otherwise) for
as long as their call runs in a thread; when none is free they queue, silently. The limiter
already knows the exact state (``borrowed_tokens``, ``statistics().tasks_waiting``,
``total_tokens``), so the gauges are read from it on every lag probe: nothing on any call's path.

The wait of each call can only be seen where it waits, so the limiter object itself is switched,
once at startup, to a subclass of its own class whose ``acquire_on_behalf_of`` times the wait
(``__class__`` assignment: the very object every caller already uses, its tokens and queue kept; no
private anyio name touched). A call that finds a free token records 0 without reading the clock.
"""

from __future__ import annotations

from collections.abc import Callable
from time import monotonic, perf_counter
from typing import Any

from ..load import LoadReadings
from .budget import LineBudget, logger
from .metrics import LoopMetrics

__all__ = ["ThreadPoolMonitor", "measure_waits"]

_MEASURED = "_opskit_observe_wait"
_classes: dict[type[Any], type[Any]] = {}


def _measured_class(base: type[Any]) -> type[Any]:
    cls = _classes.get(base)
    if cls is not None:
        return cls

    class MeasuredCapacityLimiter(base):  # type: ignore[misc]
        """anyio's limiter, timing how long each borrower waits for its token."""

        __slots__ = ()

        async def acquire_on_behalf_of(self, borrower: object) -> None:
            observe: Callable[[float], None] = getattr(type(self), _MEASURED)
            if self.available_tokens > 0:  # a free token: anyio hands it over at once
                await super().acquire_on_behalf_of(borrower)
                observe(0.0)
                return
            start = perf_counter()
            await super().acquire_on_behalf_of(borrower)
            observe(perf_counter() - start)

    MeasuredCapacityLimiter.__qualname__ = f"Measured{base.__qualname__}"
    _classes[base] = MeasuredCapacityLimiter
    return MeasuredCapacityLimiter


def measure_waits(limiter: Any, observe: Callable[[float], None]) -> bool:
    """Make ``limiter`` report each borrower's wait to ``observe``; False when it cannot be done."""
    base = type(limiter)
    if getattr(base, "__opskit_measured__", False):
        setattr(base, _MEASURED, staticmethod(observe))
        return True
    cls = _measured_class(base)
    cls.__opskit_measured__ = True
    setattr(cls, _MEASURED, staticmethod(observe))
    try:
        limiter.__class__ = cls
    except TypeError:
        return False
    return True


class ThreadPoolMonitor:
    """Samples the default limiter of the loop it was started on; warns once per saturation."""

    def __init__(
        self,
        metrics: LoopMetrics,
        *,
        size: int | None,
        saturated_after: float,
        budget: LineBudget,
        readings: LoadReadings | None = None,
    ) -> None:
        self._metrics = metrics
        self._readings = readings
        self._size = size
        self._saturated_after = saturated_after
        self._budget = budget
        self._busy = metrics.pool_busy.labels()
        self._waiting = metrics.pool_waiting.labels()
        self._capacity = metrics.pool_size.labels()
        self._suppressed = metrics.suppressed.labels("threadpool")
        self._wait = metrics.pool_wait.labels()
        self._limiter: Any = None
        self._last: tuple[float, float, float] | None = None
        self._full_since: float | None = None
        self._warned = False

    def start(self) -> None:
        """Size and instrument the running loop's default limiter (call it on the loop)."""
        from anyio import to_thread

        limiter = to_thread.current_default_thread_limiter()
        if self._size is not None:
            limiter.total_tokens = self._size
        if not measure_waits(limiter, self._wait.observe):
            logger().warning("thread pool waits cannot be measured; the pool's gauges still are", limiter=repr(limiter))
        self._limiter = limiter
        self._last = None
        self.sample(monotonic())

    def sample(self, now: float) -> None:
        """Update the gauges from the limiter (only what changed) and watch for saturation."""
        limiter = self._limiter
        if limiter is None:
            return
        busy, size = limiter.borrowed_tokens, limiter.total_tokens
        # Calls wait only when every token is out: the statistics (a tuple of borrowers) only then.
        waiting = limiter.statistics().tasks_waiting if busy >= size else 0
        values = (float(busy), float(waiting), float(size))
        if self._readings is not None:
            self._readings.pool_busy, self._readings.pool_size = busy, size
        if values != self._last:
            self._last = values
            self._busy.set(values[0])
            self._waiting.set(values[1])
            self._capacity.set(values[2])
        if values[0] < values[2]:
            self._full_since = None
            self._warned = False
            return
        if self._full_since is None:
            self._full_since = now
        elif not self._warned and now - self._full_since >= self._saturated_after:
            self._warned = True
            if self._budget.take() is None:
                self._suppressed.inc()
                return
            logger().warning(
                "thread pool saturated",
                busy=int(values[0]),
                waiting=int(values[1]),
                size=int(values[2]),
                saturated_ms=round((now - self._full_since) * 1000),
            )
