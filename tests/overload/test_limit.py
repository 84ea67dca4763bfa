"""The caps: a fixed one stays put; the adaptive one follows latency within its bounds."""

from __future__ import annotations

from opskit.overload import AdaptiveLimit, FixedLimit

SERVICE = 0.02  # seconds of event-loop time per request


def loop_bound(limit: AdaptiveLimit, rounds: int, service: float = SERVICE) -> list[int]:
    """More offered than served, by a route that holds the loop: the requests admitted together take
    turns, the i-th finishing after i services. Returns the cap after each batch."""
    caps = []
    for _ in range(rounds):
        cap = limit.cap
        for position in range(cap):
            limit.completed(service * (position + 1), position)
        caps.append(limit.cap)
    return caps


def io_bound(limit: AdaptiveLimit, rounds: int, service: float = SERVICE) -> list[int]:
    """Every slot always taken by requests whose latency does not grow with concurrency (they await I/O)."""
    caps = []
    for _ in range(rounds):
        cap = limit.cap
        for position in range(cap):
            limit.completed(service, position)
        caps.append(limit.cap)
    return caps


class TestFixedLimit:
    def test_never_moves(self) -> None:
        """Whatever the latency, a fixed cap is the configured number."""
        limit = FixedLimit(10)
        for _ in range(100):
            limit.completed(60.0, 9)
        assert limit.cap == 10
        assert not limit.adaptive


class TestAdaptiveLimit:
    def test_starts_permissive_at_its_upper_bound(self) -> None:
        """It starts where no evidence is needed to serve everything: the upper bound."""
        assert AdaptiveLimit(1, 200, 1.4).cap == 200
        assert AdaptiveLimit(1, 200, 1.4, start=10).cap == 10
        assert AdaptiveLimit(20, 200, 1.4, start=5).cap == 20

    def test_a_route_that_holds_the_loop_settles_at_one_or_two(self) -> None:
        """Requests that can only take turns gain nothing from concurrency: from 200 the cap falls within
        the first batch, at most halving per round of 20, and then mostly stays at 1, probing 2 now and then."""
        limit = AdaptiveLimit(1, 200, 1.4)
        first = AdaptiveLimit(1, 200, 1.4)
        for position in range(20):
            first.completed(SERVICE * (position + 1), position)
        assert first.cap == 10  # the round's peak concurrency (20), halved
        caps = loop_bound(limit, 600)
        assert caps[0] == 1
        assert set(caps[-400:]) <= {1, 2}
        assert caps[-400:].count(1) > 0.9 * 400
        assert limit.baseline is not None and abs(limit.baseline - SERVICE) < 1e-9

    def test_io_bound_work_keeps_a_high_cap(self) -> None:
        """Latency flat as concurrency grows: never lowered, and grown by one per probe up to the bound."""
        limit = AdaptiveLimit(1, 30, 1.4, start=20)
        caps = io_bound(limit, 200)
        assert caps == sorted(caps)
        assert caps[-1] == 30

    def test_growth_is_slow_probing(self) -> None:
        """A step up needs 100 requests within the tolerance (at least a round's worth) with half the cap in use."""
        limit = AdaptiveLimit(1, 200, 1.4, start=10)
        for _ in range(99):
            limit.completed(SERVICE, 9)
        assert limit.cap == 10
        limit.completed(SERVICE, 9)
        assert limit.cap == 11

    def test_an_unused_cap_does_not_grow(self) -> None:
        """No evidence that more would be fine: requests that never take half the cap leave it alone."""
        limit = AdaptiveLimit(1, 200, 1.4, start=10)
        for _ in range(1000):
            limit.completed(SERVICE, 0 if _ % 2 else 3)  # at most 4 in flight of 10
        assert limit.cap == 10

    def test_never_below_the_lower_bound(self) -> None:
        """Even a latency far beyond the tolerance holds the cap at its lower bound."""
        limit = AdaptiveLimit(4, 200, 1.4)
        limit.completed(SERVICE, 0)
        for _ in range(2000):
            limit.completed(100.0, limit.cap - 1)
        assert limit.cap == 4

    def test_one_slow_request_moves_nothing(self) -> None:
        """The decision is on the mean of a round: one slow request among fast ones is no overload."""
        limit = AdaptiveLimit(1, 200, 1.4, start=10)
        limit.completed(SERVICE, 0)
        limit.completed(SERVICE * 3, 9)
        for _ in range(8):
            limit.completed(SERVICE, 9)
        assert limit.cap == 10

    def test_without_a_baseline_nothing_is_lowered(self) -> None:
        """A worker that is never empty has no latency to compare with: it keeps its cap."""
        limit = AdaptiveLimit(1, 50, 1.4, start=50)
        for _ in range(1000):
            limit.completed(5.0, 20)
        assert limit.baseline is None
        assert limit.cap == 50

    def test_a_slower_app_is_learnt_once_the_cap_is_low(self) -> None:
        """When the app itself becomes 5x slower the cap falls; at the low cap the worker is often empty,
        the baseline follows, and the cap grows back where latency no longer queues."""
        limit = AdaptiveLimit(1, 20, 1.4, start=20)
        io_bound(limit, 10)
        assert limit.cap == 20
        io_bound(limit, 10, service=SERVICE * 5)
        assert limit.cap < 5
        caps = io_bound(limit, 2000, service=SERVICE * 5)
        assert caps[-1] == 20
