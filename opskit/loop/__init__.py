"""Runtime health of an async service: the event loop, anyio's thread pool and BackgroundTasks.

One blocking call in an ``async def`` route stalls every request of its worker; ``def`` routes and
sync dependencies queue for anyio's 40 threads; BackgroundTasks run after the response, out of
sight of the request metrics. With ``OPSKIT_RUNTIME_ENABLED`` (the default) each worker measures:

* event-loop lag (``opskit_event_loop_lag_seconds``), from a timer the loop runs for itself;
* blocks: a watchdog thread writes one warning with the blocking stack, route and request ID when
  the loop stays away longer than ``OPSKIT_RUNTIME_BLOCKED_THRESHOLD`` (``opskit_event_loop_blocked_*``);
* the loop's busy share, the part of the wall time it spent running callbacks
  (``opskit_event_loop_busy_ratio``);
* the thread pool's busy threads, waiting calls, size and waits (``opskit_threadpool_*``);
* each BackgroundTask's duration and failures, as a child span of the request's span with tracing
  (``opskit_background_task_*``).

None of it runs per request.
"""

from __future__ import annotations

from ..component import Component
from ..runtime import Runtime
from .background import BackgroundTaskRecorder, task_name
from .budget import LineBudget
from .busy import LoopBusyShare
from .component import LoopComponent
from .labels import BoundedLabels
from .lag import LagProbe
from .metrics import LoopMetrics
from .stack import app_frames, format_stack, scope_in
from .threadpool import ThreadPoolMonitor, measure_waits
from .watchdog import Culprit, Watchdog, culprit

__all__ = [
    "BackgroundTaskRecorder",
    "BoundedLabels",
    "Culprit",
    "LagProbe",
    "LineBudget",
    "LoopBusyShare",
    "LoopComponent",
    "LoopMetrics",
    "ThreadPoolMonitor",
    "Watchdog",
    "app_frames",
    "create_component",
    "culprit",
    "format_stack",
    "measure_waits",
    "scope_in",
    "task_name",
]


def create_component(runtime: Runtime) -> Component | None:
    """The runtime-health component, or None when it is switched off.

    With the feature off, a set ``OPSKIT_THREADPOOL_SIZE`` still sizes the pool at startup.
    """
    settings = runtime.settings
    if settings.runtime_enabled:
        return LoopComponent(runtime)
    if settings.threadpool_size is not None:
        return _PoolSizer(settings.threadpool_size)
    return None


class _PoolSizer(Component):
    """Only sizes anyio's default thread pool, once per serving process (see :class:`LoopComponent`)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def process_started(self) -> None:
        from anyio import to_thread

        to_thread.current_default_thread_limiter().total_tokens = self.size
