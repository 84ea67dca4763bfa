"""Every metric of the runtime-health feature, declared in opskit's metrics engine (exact across workers)."""

from __future__ import annotations

from typing import Final

from .. import metrics as _metrics
from ..metrics.registry import CounterChild, HistogramChild, Registry

__all__ = ["BACKGROUND_BUCKETS", "BLOCK_BUCKETS", "LAG_BUCKETS", "WAIT_BUCKETS", "LoopMetrics"]

LAG_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BLOCK_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
WAIT_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BACKGROUND_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
NO_REQUEST: Final = "__none__"


class LoopMetrics:
    """The event loop's lag and blocks, anyio's thread pool, BackgroundTasks.

    Labels are route templates (``__none__`` when the loop was blocked outside any request), capped
    task names and fixed kinds, never a raw path.
    """

    def __init__(self, registry: Registry | None = None) -> None:
        registry = registry if registry is not None else _metrics.REGISTRY
        self.lag = registry.histogram(
            "opskit_event_loop_lag_seconds",
            "How late a timer scheduled on the event loop ran (event-loop lag), per probe.",
            buckets=LAG_BUCKETS,
        )
        self.current_lag = registry.gauge(
            "opskit_event_loop_current_lag_seconds",
            "The latest event-loop lag; while the loop is blocked, how long it has been (worst worker).",
            mode="max",
        )
        self.busy = registry.gauge(
            "opskit_event_loop_busy_ratio",
            "Share of wall time the event loop was busy running callbacks (0..1, about a second; worst worker).",
            mode="max",
        )
        self.blocked = registry.counter(
            "opskit_event_loop_blocked_total",
            "Times the event loop stayed busy longer than the threshold, by the route whose code ran.",
            ["route"],
        )
        self.blocked_duration = registry.histogram(
            "opskit_event_loop_blocked_seconds",
            "How long each detected block kept the event loop from running anything else.",
            buckets=BLOCK_BUCKETS,
        )
        self.suppressed = registry.counter(
            "opskit_runtime_warnings_suppressed_total",
            "Warning lines not written because of the rate bound, by kind (blocked, threadpool).",
            ["kind"],
        )
        self.pool_busy = registry.gauge(
            "opskit_threadpool_busy_threads", "Threads of anyio's default pool running a call.", mode="sum"
        )
        self.pool_waiting = registry.gauge(
            "opskit_threadpool_waiting_tasks", "Calls waiting for a thread of anyio's default pool.", mode="sum"
        )
        self.pool_size = registry.gauge(
            "opskit_threadpool_max_threads", "Size of anyio's default thread pool (its capacity).", mode="sum"
        )
        self.pool_wait = registry.histogram(
            "opskit_threadpool_wait_seconds",
            "How long a call waited for a thread of anyio's default pool (0 when one was free).",
            buckets=WAIT_BUCKETS,
        )
        self.background_duration = registry.histogram(
            "opskit_background_task_duration_seconds",
            "Run time of each BackgroundTask, by its function's qualified name.",
            ["task"],
            buckets=BACKGROUND_BUCKETS,
        )
        self.background_failures = registry.counter(
            "opskit_background_task_failures_total",
            "BackgroundTasks that raised, by their function's qualified name.",
            ["task"],
        )
        self._blocked_children: dict[str, CounterChild] = {}
        self._background: dict[str, tuple[HistogramChild, CounterChild]] = {}

    def count_block(self, route: str) -> None:
        child = self._blocked_children.get(route)
        if child is None:
            child = self._blocked_children[route] = self.blocked.labels(route)
        child.inc()

    def background(self, task: str) -> tuple[HistogramChild, CounterChild]:
        """The duration and failure series of ``task`` (a bounded label)."""
        children = self._background.get(task)
        if children is None:
            children = self.background_duration.labels(task), self.background_failures.labels(task)
            self._background[task] = children
        return children
