"""BackgroundTasks: a duration and a failure count per task function, a child span, a failure line.

Starlette runs ``response.background`` after the last body message is sent, still inside the app
call and in the request's context (its request ID and, with tracing, its server span are current).
``BackgroundTasks`` calls each of its ``BackgroundTask`` objects in turn, so wrapping
``BackgroundTask.__call__`` once, at install, sees every task run, single or in a list, and only
them: no per-request hook, nothing for a request without background tasks, and the access log and
``http_request_duration_seconds`` (which end with the body) are untouched. The wrapper is
process-wide; with no recorder installed it calls the original straight away.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from time import perf_counter
from typing import Any

from opentelemetry import trace
from starlette.background import BackgroundTask

from ..context import _request_id
from .budget import logger
from .labels import BoundedLabels
from .metrics import LoopMetrics

__all__ = ["BackgroundTaskRecorder", "install", "task_name", "uninstall"]

_MAX_ERROR = 200

Call = Callable[[BackgroundTask], Coroutine[Any, Any, None]]
_original: Call = BackgroundTask.__call__
_recorder: BackgroundTaskRecorder | None = None


def task_name(func: Any) -> str:
    """The qualified name of a task's function (through ``functools.partial``)."""
    while isinstance(func, functools.partial):
        func = func.func
    name = getattr(func, "__qualname__", None)
    if not isinstance(name, str):
        name = type(func).__qualname__
    return name


class BackgroundTaskRecorder:
    """Times each task, counts its failures, and wraps it in a child span when tracing is on."""

    def __init__(self, metrics: LoopMetrics, *, max_names: int, traced: bool) -> None:
        self._metrics = metrics
        self._names = BoundedLabels(max_names)
        self._tracer = trace.get_tracer("opskit.loop") if traced else None
        self._overflow_logged = False

    def label(self, func: Any) -> str:
        label = self._names(task_name(func))
        if self._names.overflowed and not self._overflow_logged:
            self._overflow_logged = True
            logger().warning("background task names capped; further ones are labelled other", cap=self._names.cap)
        return label

    async def run(self, task: BackgroundTask, call: Call) -> None:
        name = task_name(task.func)
        label = self.label(task.func)
        duration, failures = self._metrics.background(label)
        start = perf_counter()
        try:
            if self._tracer is None:
                await call(task)
            else:
                with self._tracer.start_as_current_span(
                    f"background {name}", attributes={"opskit.background_task": name}
                ):
                    await call(task)
        except Exception as exc:
            elapsed = perf_counter() - start
            failures.inc()
            duration.observe(elapsed)
            logger().error(
                "background task failed",
                task=name,
                duration_ms=round(elapsed * 1000, 1),
                exception_type=type(exc).__qualname__,
                error=str(exc)[:_MAX_ERROR],
                request_id=_request_id.get(),
            )
            raise
        duration.observe(perf_counter() - start)


async def _measured_call(self: BackgroundTask) -> None:
    recorder = _recorder
    if recorder is None:
        await _original(self)
        return
    await recorder.run(self, _original)


def install(recorder: BackgroundTaskRecorder) -> None:
    """Measure every BackgroundTask of this process with ``recorder`` (idempotent)."""
    global _recorder
    _recorder = recorder
    if BackgroundTask.__call__ is not _measured_call:
        BackgroundTask.__call__ = _measured_call  # type: ignore[method-assign]


def uninstall() -> None:
    """Give BackgroundTask its own ``__call__`` back (tests)."""
    global _recorder
    _recorder = None
    BackgroundTask.__call__ = _original  # type: ignore[method-assign,assignment]
