"""The deadline of batches already written: one timer for all, stalls forgiven once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from opskit.ratelimit.deadline import Expiry


class TestExpiry:
    def test_a_reply_in_time_is_left_alone(self) -> None:
        """Futures answered before their deadline keep their results; the timer fails none of them."""

        async def main() -> list[Any]:
            expiry = Expiry(0.05)
            futures = [asyncio.get_running_loop().create_future() for _ in range(3)]
            for i, future in enumerate(futures):
                expiry.add(future)
                future.set_result(i)
            await asyncio.sleep(0.12)
            return [f.result() for f in futures]

        assert asyncio.run(main()) == [0, 1, 2]

    def test_no_reply_fails_with_a_timeout_at_the_deadline(self) -> None:
        """An unanswered future fails with asyncio.TimeoutError, not before its deadline; a later one
        keeps waiting until its own."""

        async def main() -> tuple[float, bool]:
            loop = asyncio.get_running_loop()
            expiry = Expiry(0.05)
            first, second = loop.create_future(), loop.create_future()
            started = loop.time()
            expiry.add(first)
            await asyncio.sleep(0.03)
            expiry.add(second)
            with pytest.raises(asyncio.TimeoutError):
                await first
            failed_after = loop.time() - started
            second_waiting = not second.done()
            with pytest.raises(asyncio.TimeoutError):
                await second
            return failed_after, second_waiting

        failed_after, second_waiting = asyncio.run(main())
        assert failed_after >= 0.05
        assert second_waiting

    def test_a_stalled_loop_lets_the_late_reply_win(self) -> None:
        """A loop blocked past the deadline gives the batch that stall once more: a reply read right
        after the stall is the future's result, not a timeout."""

        async def main() -> Any:
            loop = asyncio.get_running_loop()
            expiry = Expiry(0.01)
            future = loop.create_future()
            expiry.add(future)
            time.sleep(0.05)  # noqa: ASYNC251 (the loop is blocked past the deadline: the point of the test)
            for _ in range(3):  # the timer has run by now, late: extended, not failed
                await asyncio.sleep(0)
            assert not future.done()
            future.set_result("reply")
            return await future

        assert asyncio.run(main()) == "reply"

    def test_one_expiry_serves_successive_loops(self) -> None:
        """A backend outlives an event loop (tests, a restarted app): on a new loop the deadline still applies."""
        expiry = Expiry(0.02)

        async def unanswered() -> bool:
            future = asyncio.get_running_loop().create_future()
            expiry.add(future)
            try:
                await future
            except asyncio.TimeoutError:
                return True
            return False

        assert asyncio.run(unanswered())
        assert asyncio.run(unanswered())
