"""Token-bucket semantics, identical on every backend: in memory, single Redis, Redis Cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from opskit.ratelimit import Decision, MemoryBackend, Policy, RateLimiter, parse_rates
from opskit.ratelimit.responses import retry_after
from tests.ratelimit.conftest import LimiterFactory

T = TypeVar("T")


def run(make: LimiterFactory, scenario: Callable[[RateLimiter], Awaitable[T]]) -> T:
    """Run ``scenario`` with a fresh limiter inside one event loop, then close the limiter."""

    async def main() -> T:
        limiter = make()
        await limiter.warm_up()
        try:
            return await scenario(limiter)
        finally:
            await limiter.close()

    return asyncio.run(main())


def outcomes(decisions: list[Decision]) -> list[str]:
    return [d.outcome for d in decisions]


class TestTokenBucket:
    def test_burst_then_refill(self, make_limiter: LimiterFactory) -> None:
        """Burst 10 at 5/s: 10 pass at once, the 11th is limited (Retry-After 1), 5 more pass a second later."""
        policy = Policy.build("burst", "5/second burst=10")

        async def scenario(limiter: RateLimiter) -> tuple[list[Decision], list[Decision]]:
            # Issued together (one pipeline on Redis) so that no token refills between them.
            first = list(await asyncio.gather(*(limiter.hit(policy, "alice") for _ in range(11))))
            await asyncio.sleep(1.0)
            later = [await limiter.hit(policy, "alice") for _ in range(5)]
            return first, later

        first, later = run(make_limiter, scenario)
        assert outcomes(first) == ["allowed"] * 10 + ["limited"]
        assert [d.remaining for d in first[:10]] == list(range(9, -1, -1))
        assert retry_after(first[10]) == 1
        assert outcomes(later) == ["allowed"] * 5

    def test_rejections_cost_nothing(self, make_limiter: LimiterFactory) -> None:
        """Hammering an empty bucket does not push the refill back: a second later a request passes."""
        policy = Policy.build("free-rejects", "1/second burst=2")

        async def scenario(limiter: RateLimiter) -> list[Decision]:
            decisions = [await limiter.hit(policy, "alice") for _ in range(12)]
            await asyncio.sleep(1.05)
            return [*decisions, await limiter.hit(policy, "alice")]

        result = run(make_limiter, scenario)
        assert outcomes(result) == ["allowed"] * 2 + ["limited"] * 10 + ["allowed"]

    def test_weighted_requests(self, make_limiter: LimiterFactory) -> None:
        """A request declaring cost 4 takes 4 tokens; one that no longer fits is refused, a cheaper one passes."""
        policy = Policy.build("weighted", "1/minute burst=10", cost=4)

        async def scenario(limiter: RateLimiter) -> list[Decision]:
            heavy = [await limiter.hit(policy, "alice") for _ in range(3)]
            return [*heavy, await limiter.hit(policy, "alice", cost=2), await limiter.hit(policy, "alice", cost=1)]

        result = run(make_limiter, scenario)
        assert outcomes(result) == ["allowed", "allowed", "limited", "allowed", "limited"]

    def test_forced_spend_puts_the_bucket_in_debt(self, make_limiter: LimiterFactory) -> None:
        """A forced spend of 25 on a bucket of 10 (10/second) is taken although it does not fit: it says it would
        not have passed, the next request is refused until the 16 tokens of debt and one more have refilled
        (1.7 s), then requests pass again. Forced spends are not counted as decisions."""
        policy = Policy.build("debt", "10/second burst=10")

        async def scenario(limiter: RateLimiter) -> tuple[list[Decision], Decision, float]:
            first = await limiter.hit(policy, "alice")
            forced = await limiter.hit(policy, "alice", cost=25, force=True)
            refused = await limiter.hit(policy, "alice")
            await asyncio.sleep(1.0)
            still = await limiter.hit(policy, "alice")
            await asyncio.sleep(0.85)
            return [first, refused, still, await limiter.hit(policy, "alice")], forced, refused.retry_after

        decisions, forced, retry = run(make_limiter, scenario)
        assert forced.outcome == "limited"
        assert forced.remaining == 0
        assert outcomes(decisions) == ["allowed", "limited", "limited", "allowed"]
        assert 1.65 <= retry <= 1.75

    def test_forced_spend_that_fits_is_an_ordinary_spend(self, make_limiter: LimiterFactory) -> None:
        """A forced spend within the burst is allowed and takes its tokens, like any request."""
        policy = Policy.build("forced-fits", "1/minute burst=5, 100/second")

        async def scenario(limiter: RateLimiter) -> list[Decision]:
            forced = await limiter.hit(policy, "alice", cost=3, force=True)
            return [forced, await limiter.hit(policy, "alice", cost=2), await limiter.hit(policy, "alice")]

        result = run(make_limiter, scenario)
        assert outcomes(result) == ["allowed", "allowed", "limited"]
        assert result[0].remaining == 2

    def test_every_rate_of_a_policy_applies(self, make_limiter: LimiterFactory) -> None:
        """`100/second, 3/minute`: the 4th request is refused by the minute rate, which the decision names."""
        policy = Policy.build("two-rates", "100/second, 3/minute")

        async def scenario(limiter: RateLimiter) -> list[Decision]:
            return [await limiter.hit(policy, "alice") for _ in range(4)]

        result = run(make_limiter, scenario)
        assert outcomes(result) == ["allowed"] * 3 + ["limited"]
        assert result[3].rate.period == 60
        assert retry_after(result[3]) == 20

    def test_clients_and_policies_have_their_own_buckets(self, make_limiter: LimiterFactory) -> None:
        """An exhausted client does not limit another client, nor itself under another policy."""
        a = Policy.build("a", "1/minute")
        b = Policy.build("b", "1/minute")

        async def scenario(limiter: RateLimiter) -> list[Decision]:
            return [
                await limiter.hit(a, "alice"),
                await limiter.hit(a, "alice"),
                await limiter.hit(a, "bob"),
                await limiter.hit(b, "alice"),
            ]

        assert outcomes(run(make_limiter, scenario)) == ["allowed", "limited", "allowed", "allowed"]

    def test_concurrent_decisions_are_exact(self, make_limiter: LimiterFactory) -> None:
        """60 concurrent requests against a bucket of 25 (slow refill): exactly 25 pass."""
        policy = Policy.build("concurrent", "1/minute burst=25")

        async def scenario(limiter: RateLimiter) -> list[Decision]:
            return list(await asyncio.gather(*(limiter.hit(policy, "alice") for _ in range(60))))

        assert outcomes(run(make_limiter, scenario)).count("allowed") == 25


class TestMemoryBackend:
    def test_stays_bounded_with_a_million_keys(self) -> None:
        """A million distinct clients never grow the table past max_keys; recent clients keep their state."""
        backend = MemoryBackend(max_keys=1000)
        rates = parse_rates("1/minute")
        for i in range(1_000_000):
            backend.decide(f"client-{i}", rates)
        assert len(backend) == 1000
        assert backend.decide("client-999999", rates).outcome == "limited"
