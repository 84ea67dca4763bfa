"""The caps: a fixed one stays put; the adaptive one follows latency within its bounds."""

from __future__ import annotations

from opskit.overload import AdaptiveLimit, FixedLimit

SERVICE = 0.02  # seconds of event-loop time per request: n in flight take n times as long


def overloaded(limit: AdaptiveLimit, rounds: int, service: float = SERVICE, *, queueing: bool = True) -> list[int]:
    """Offer more than the worker serves: every slot is always taken. Returns the cap after each round."""
    caps = []
    for _ in range(rounds):
        cap = limit.cap
        for _ in range(cap):
            limit.completed(service * cap if queueing else service, cap - 1)
        caps.append(limit.cap)
    return caps


def light(limit: AdaptiveLimit, n: int, service: float = SERVICE) -> None:
    """Requests that find the worker idle."""
    for _ in range(n):
        limit.completed(service, 0)


class TestFixedLimit:
    def test_never_moves(self) -> None:
        """Whatever the latency, a fixed cap is the configured number."""
        limit = FixedLimit(10)
        for _ in range(100):
            limit.completed(60.0, 9)
        assert limit.cap == 10
        assert not limit.adaptive


class TestAdaptiveLimit:
    def test_starts_at_ten_within_bounds(self) -> None:
        """It starts at 10, clamped into the configured bounds."""
        assert AdaptiveLimit(2, 200, 2.0).cap == 10
        assert AdaptiveLimit(20, 200, 2.0).cap == 20
        assert AdaptiveLimit(1, 5, 2.0).cap == 5

    def test_queueing_latency_brings_the_cap_down_to_what_the_worker_serves(self) -> None:
        """A loop-bound worker (latency grows with requests in flight) settles at 2 or 3 in flight, the
        tolerance of twice the unloaded latency, and stays there."""
        limit = AdaptiveLimit(2, 200, 2.0)
        light(limit, 20)
        assert limit.baseline is not None and abs(limit.baseline - SERVICE) < 1e-9
        caps = overloaded(limit, 200)
        assert caps[0] < 10
        assert set(caps[-100:]) <= {2, 3}

    def test_a_worker_that_does_not_queue_grows_to_its_upper_bound(self) -> None:
        """Latency that stays flat while every slot is taken (I/O-bound work) lets the cap grow, by one a round."""
        limit = AdaptiveLimit(2, 50, 2.0)
        light(limit, 20)
        caps = overloaded(limit, 100, queueing=False)
        assert caps[:3] == [11, 12, 13]
        assert caps[-1] == 50

    def test_an_unused_cap_does_not_grow(self) -> None:
        """No evidence that more would be fine: requests that never take half the cap leave it alone."""
        limit = AdaptiveLimit(2, 200, 2.0)
        for _ in range(1000):
            limit.completed(SERVICE, 3)  # 4 in flight of 10
        assert limit.cap == 10

    def test_never_below_the_lower_bound(self) -> None:
        """Even a latency far beyond the tolerance holds the cap at its lower bound."""
        limit = AdaptiveLimit(4, 200, 2.0)
        light(limit, 20)
        for _ in range(100):
            for _ in range(limit.cap):
                limit.completed(100.0, limit.cap - 1)
        assert limit.cap == 4

    def test_one_slow_request_moves_nothing(self) -> None:
        """The decision is on the mean of a round: one slow request among fast ones is no overload."""
        limit = AdaptiveLimit(2, 200, 2.0)
        light(limit, 20)
        limit.completed(SERVICE * 10, 9)
        for _ in range(9):
            limit.completed(SERVICE, 9)
        assert limit.cap == 11

    def test_a_slower_app_is_learnt_once_the_cap_is_low(self) -> None:
        """When the app itself becomes 5x slower, the cap falls; lightly loaded requests at the low cap
        then teach the new baseline and the cap grows again where latency no longer queues."""
        limit = AdaptiveLimit(2, 50, 2.0)
        light(limit, 20)
        overloaded(limit, 50, service=SERVICE * 5, queueing=False)
        assert limit.cap == 2
        light(limit, 100, service=SERVICE * 5)
        caps = overloaded(limit, 60, service=SERVICE * 5, queueing=False)
        assert caps[-1] == 50
