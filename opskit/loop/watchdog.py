"""The blocked-loop watchdog: a thread that notices when the event loop has not come back.

The loop's lag probe (:class:`~opskit.loop.lag.LagProbe`) says when the loop is due back. While it
is, the thread sleeps until ``due + threshold``: a healthy loop costs it a few wake-ups a second.
Once the loop is later than ``threshold``, the thread samples it every ``threshold / 4``, without
stopping it: ``sys._current_frames()`` gives the frame the loop thread is executing (its stack is
what blocks), ``asyncio.current_task(loop)`` the task it belongs to, whose context holds the request
ID, and the innermost framework frame of that stack the request's scope (the router's, so the route
is known). The first sample past the threshold writes one warning line; a later sample that finds
another task running (the next request blocking before the loop got back) starts a new block. When
the loop comes back, each block's full duration goes into a histogram.

The thread never takes a lock the loop holds and never touches the loop's objects beyond reading
them; anything that fails in it is logged at a bounded rate and the app goes on.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import threading
from dataclasses import dataclass
from time import monotonic
from types import FrameType
from typing import Any

from ..context import _request_id
from ..routes import RouteTemplates
from .budget import LineBudget, logger
from .lag import LagProbe
from .metrics import NO_REQUEST, LoopMetrics
from .stack import format_stack, frame_of_thread, scope_in

__all__ = ["Culprit", "Watchdog", "culprit", "task_context", "task_frame"]


@dataclass(slots=True)
class Culprit:
    """The request (if any) whose code the loop thread was running."""

    route: str
    request_id: str | None
    method: str | None
    task: str | None


@dataclass(slots=True)
class _Block:
    task: object
    since: float
    due: float
    reported: bool = False


def task_context(task: asyncio.Task[Any]) -> contextvars.Context | None:
    """The context ``task`` runs in, read from any thread.

    ``Task.get_context()`` exists from Python 3.12; before, the pure-Python task keeps it in
    ``_context`` and the C task exposes it only to the garbage collector, as its first referent.
    """
    get_context = getattr(task, "get_context", None)
    if get_context is not None:
        return get_context()  # type: ignore[no-any-return]
    context = getattr(task, "_context", None)
    if isinstance(context, contextvars.Context):
        return context
    return next((r for r in gc.get_referents(task) if isinstance(r, contextvars.Context)), None)


def task_frame(task: asyncio.Task[Any] | None) -> FrameType | None:
    """The frame of the coroutine ``task`` runs: the outermost frame of its stack."""
    if task is None:
        return None
    frame = getattr(task.get_coro(), "cr_frame", None)
    return frame if isinstance(frame, FrameType) else None


def culprit(task: asyncio.Task[Any] | None, frame: FrameType | None, routes: RouteTemplates) -> Culprit:
    """Who blocks: the route from the scope in the blocked stack, the request ID from the task's context."""
    request_id = None
    name = None
    if task is not None:
        name = task.get_name()
        context = task_context(task)
        if context is not None:
            request_id = context.get(_request_id)
    scope = scope_in(frame)
    if scope is None:
        return Culprit(NO_REQUEST, request_id, None, name)
    return Culprit(routes.resolve(scope), request_id, scope.get("method"), name)


class Watchdog:
    """Watches the loop that ``probe`` beats on; see the module docstring."""

    def __init__(
        self,
        probe: LagProbe,
        metrics: LoopMetrics,
        routes: RouteTemplates,
        *,
        threshold: float,
        stack_depth: int,
        budget: LineBudget,
    ) -> None:
        self.threshold = threshold
        self._probe = probe
        self._metrics = metrics
        self._routes = routes
        self._depth = stack_depth
        self._budget = budget
        self._tick = threshold / 4
        self._suppressed = metrics.suppressed.labels("blocked")
        self._current = metrics.current_lag.labels()
        self._block_seconds = metrics.blocked_duration.labels()
        self._errors = LineBudget(1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._block: _Block | None = None
        self._last_sample = 0.0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch ``loop``, which runs on the calling thread."""
        self.stop()
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._block = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="opskit-loop-watchdog", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and wait for it (it wakes at once)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def forget(self) -> None:
        """After a fork: the thread does not exist in this process; :meth:`start` may run again."""
        self._thread = None
        self._block = None

    def _run(self) -> None:
        stop = self._stop
        while not stop.is_set():
            try:
                wait = self.check(monotonic())
            except Exception as exc:  # the feature degrades; the app goes on
                wait = 1.0
                if self._errors.take() is not None:
                    logger().error("event-loop watchdog failed; it keeps watching", exc_info=exc)
            stop.wait(wait)

    def check(self, now: float) -> float:
        """One look at the loop; returns the seconds to wait before the next one."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._stop.set()
            return 0.0
        due = self._probe.due
        if due is None or not loop.is_running():
            return self._tick
        block = self._block
        if block is not None and block.due != due:  # the loop came back
            late = self._probe.late
            self._end(block, late[1] if late is not None and late[0] == block.due else now)
            block = self._block = None
        overdue = now - due
        if overdue < self.threshold:
            return max(self.threshold - overdue, self._tick)
        self._current.set(overdue)
        task = asyncio.current_task(loop)
        if block is None:
            block = self._block = _Block(task, due, due)
        elif block.task is not task:  # another task blocks before the loop got back: a new block
            self._end(block, self._last_sample)
            block = self._block = _Block(task, self._last_sample, due)
        self._last_sample = now
        if not block.reported and now - block.since >= self.threshold:
            block.reported = True
            self._report(task, now - block.since)
        return self._tick

    def _end(self, block: _Block, end: float) -> None:
        if block.reported:
            self._block_seconds.observe(max(end - block.since, 0.0))

    def _report(self, task: asyncio.Task[Any] | None, blocked: float) -> None:
        frame = frame_of_thread(self._loop_thread)
        who = culprit(task, frame, self._routes)
        self._metrics.count_block(who.route)
        dropped = self._budget.take()
        if dropped is None:
            self._suppressed.inc()
            return
        logger().warning(
            "event loop blocked",
            blocked_ms=round(blocked * 1000),
            threshold_ms=round(self.threshold * 1000),
            route=who.route,
            request_id=who.request_id,
            method=who.method,
            task=who.task,
            stack=format_stack(frame, self._depth, outermost=task_frame(task)),
            suppressed=dropped,
            pid=os.getpid(),
        )
