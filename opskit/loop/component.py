"""The runtime-health component: starts the lag probe, the watchdog and the thread-pool monitor with the loop.

It has no per-request hook: everything it measures is read off the loop, the limiter and the
BackgroundTasks themselves, so a request pays nothing for it (the middleware keeps its lean path
when no other feature needs one). Started once per serving process, on its loop: at lifespan
startup, or at the first request of a server run without lifespan (gunicorn forks before either);
a process forked later forgets the threads it did not inherit and starts its own.
"""

from __future__ import annotations

import asyncio
import os
import weakref

from ..component import Component
from ..load import load_readings
from ..routes import RouteTemplates
from ..runtime import Runtime
from . import background
from .budget import LineBudget, logger
from .busy import LoopBusyShare
from .lag import LagProbe
from .metrics import LoopMetrics
from .threadpool import ThreadPoolMonitor
from .watchdog import Watchdog

__all__ = ["LoopComponent"]

_running: weakref.WeakSet[LoopComponent] = weakref.WeakSet()


class LoopComponent(Component):
    """Event-loop lag, the blocked-loop watchdog, anyio's thread pool and BackgroundTasks of one app."""

    def __init__(self, runtime: Runtime, metrics: LoopMetrics | None = None) -> None:
        settings = self.settings = runtime.settings
        self.metrics = metrics if metrics is not None else LoopMetrics(runtime.registry)
        budget = LineBudget(settings.runtime_warnings_per_minute)
        threshold = settings.runtime_blocked_threshold
        readings = load_readings(runtime)
        self.busy = LoopBusyShare(settings.runtime_lag_interval, self.metrics.busy.labels(), readings)
        self.threadpool = ThreadPoolMonitor(
            self.metrics,
            size=settings.threadpool_size,
            saturated_after=settings.runtime_threadpool_saturated_threshold,
            budget=budget,
            readings=readings,
        )
        self.probe = LagProbe(
            settings.runtime_lag_interval,
            self.metrics,
            late_after=threshold if threshold > 0 else float("inf"),
            samplers=(self.threadpool.sample, self.busy.sample),
        )
        self.watchdog: Watchdog | None = None
        if threshold > 0:
            self.watchdog = Watchdog(
                self.probe,
                self.metrics,
                # A resolver of its own: the watchdog reads routes from its thread, not the loop's.
                RouteTemplates(runtime.app, settings.unmatched_route),
                threshold=threshold,
                stack_depth=settings.runtime_stack_depth,
                budget=budget,
            )
        traced = settings.tracing_enabled and settings.traces_exporter_resolved != "none"
        background.install(
            background.BackgroundTaskRecorder(
                self.metrics, max_names=settings.runtime_background_task_names, traced=traced
            )
        )

    def process_started(self) -> None:
        """Start the probes on the serving loop (lifespan startup, or a first request without lifespan)."""
        loop = asyncio.get_running_loop()
        try:
            self.threadpool.start()
        except Exception as exc:  # an anyio without this API: the rest still works
            logger().warning("thread pool not instrumented", exc_info=exc)
        self.busy.reset()
        self.probe.start(loop)
        if self.watchdog is not None:
            self.watchdog.start(loop)
        _running.add(self)

    async def shutdown(self) -> None:
        _running.discard(self)
        if self.watchdog is not None:
            self.watchdog.stop()
        self.probe.stop()


def _after_fork_in_child() -> None:
    # The child has the parent's objects but not its threads, nor a running loop.
    for component in list(_running):
        if component.watchdog is not None:
            component.watchdog.forget()
        component.probe.due = None
        component.busy.reset()
    _running.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
