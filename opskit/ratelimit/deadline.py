"""A hard deadline for one piece of Redis work, which a stalled event loop does not eat into."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

__all__ = ["Expiry", "within"]

T = TypeVar("T")

_STALL = 0.002  # a timer this late means the event loop was blocked, not idle
_AFTER_STALL = 0.01  # what a write, a loopback round trip and a parse take right after a stall
_GRACE_TURNS = 5  # event-loop turns a task whose reply was read in time needs to return it


def within(awaitable: Coroutine[Any, Any, T], timeout: float, background: set[asyncio.Task[Any]]) -> Awaitable[T]:
    """``awaitable``'s result, or :class:`asyncio.TimeoutError` once ``timeout`` has passed: a hard bound.

    Unlike ``asyncio.wait_for``, the caller never waits for the cancelled work to finish: redis-py's
    pool, cancelled while it waits for a connection, first takes its lock back, which held decisions
    for a second against a frozen Redis.

    A stall of the event loop (a GC pause, a busy request) is no time Redis had: the time counts from
    the work's first step, not from the call, and a deadline the loop overran by a stall is extended
    once, by that stall but at most 10 ms. At the deadline the loop gets a few more turns to finish
    work whose reply is already read: after a stall the reply and the timer are due together, and
    the reply that arrived in time must win. The bound is the timeout, plus the stalls, plus 10 ms.
    """
    loop = asyncio.get_running_loop()
    task = loop.create_task(awaitable)
    started: list[float] = []
    # Runs right after the task's first step (call_soon keeps order): the moment the command is written.
    loop.call_soon(lambda: started.append(loop.time()))
    return _within(task, timeout, started, background)


class Expiry:
    """Deadlines of one length for futures already under way (batches written on an open
    connection), all kept by one timer.

    :func:`within`'s bound without its task and timer per batch: the reply sets the future straight
    from the protocol, and a future done in time is simply dropped when the timer next fires. A
    future still waiting at its deadline fails with :class:`asyncio.TimeoutError`; one the loop
    reached late by a stall gets that stall once more, at most 10 ms, so a reply read in that time
    still wins.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._waiting: deque[list[Any]] = deque()  # [deadline, future, extended], oldest first
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, future: asyncio.Future[Any]) -> None:
        """Fail ``future`` once the timeout has passed from now, unless it is done by then."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (the old one's futures are gone with it)
            self._loop, self._timer = loop, None
            self._waiting.clear()
        deadline = loop.time() + self.timeout
        self._waiting.append([deadline, future, False])
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        loop = self._loop
        self._timer = None
        if loop is None:
            return
        now = loop.time()
        waiting = self._waiting
        while waiting and waiting[0][1].done():
            waiting.popleft()
        earliest = None
        for entry in list(waiting):
            deadline, future, extended = entry
            if future.done():
                waiting.remove(entry)
                continue
            late = now - deadline
            if late >= 0 and not extended and late > _STALL:
                deadline = entry[0] = now + min(late, _AFTER_STALL)
                entry[2] = True
            elif late >= 0:
                waiting.remove(entry)
                future.set_exception(asyncio.TimeoutError())
                continue
            if earliest is None or deadline < earliest:
                earliest = deadline
        if earliest is not None:
            self._timer = loop.call_at(earliest, self._fire)


async def _wait(task: asyncio.Future[Any], seconds: float) -> None:
    """Until ``task`` is done or ``seconds`` have passed (a leaner ``asyncio.wait`` for one task)."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(seconds, wake)
    task.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        task.remove_done_callback(wake)


async def _within(task: asyncio.Task[T], timeout: float, started: list[float], background: set[asyncio.Task[Any]]) -> T:
    loop = asyncio.get_running_loop()
    try:
        await _wait(task, timeout)
        if not task.done() and started:
            deadline = started[0] + timeout
            if deadline > loop.time():
                await _wait(task, deadline - loop.time())
            late = loop.time() - deadline
            if not task.done() and late > _STALL:
                # The loop was blocked past the deadline, so the work may have been too, just before
                # writing its command: a few milliseconds more let a healthy Redis answer it.
                await _wait(task, min(late, _AFTER_STALL))
        for _ in range(_GRACE_TURNS):
            if task.done():
                break
            await asyncio.sleep(0)
    except asyncio.CancelledError:
        _abandon(task, background)
        raise
    if task.done():
        return task.result()
    _abandon(task, background)
    raise asyncio.TimeoutError


def _abandon(task: asyncio.Task[Any], background: set[asyncio.Task[Any]]) -> None:
    """Cancel ``task`` and let it wind down on its own; its outcome is nobody's to read."""
    task.cancel()
    background.add(task)
    task.add_done_callback(background.discard)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
