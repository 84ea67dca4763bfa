"""A hard deadline for one piece of Redis work, which a stalled event loop does not eat into."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

__all__ = ["within"]

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
