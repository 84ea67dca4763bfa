"""Local shares of Redis buckets: a fraction of the round trips, admissions within the documented bound."""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec

import orjson
import pytest

from bench.servers import redis_calls
from opskit.ratelimit import Policy, RateLimiter
from opskit.ratelimit.local_share import LocalShareBackend
from opskit.ratelimit.metrics import RateLimitMetrics
from opskit.ratelimit.redis_backend import redis_backend
from tests.servers import ROOT, Background, RedisServer

P = ParamSpec("P")


def in_loop(test: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an async test in its own event loop (as the other limiter tests do with asyncio.run)."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def shared_limiter(
    redis: RedisServer, metrics: RateLimitMetrics, share: float, clock: Clock | None = None
) -> tuple[RateLimiter, LocalShareBackend]:
    remote = redis_backend(redis.url, timeout=1.0, max_connections=4)
    backend = LocalShareBackend(remote, share, clock=clock or time.monotonic)
    return RateLimiter(backend, prefix="share:", metrics=metrics), backend


def scripts(redis: RedisServer) -> int:
    return redis_calls(redis).scripts


class TestOneProcess:
    @in_loop
    async def test_a_share_answers_many_decisions_with_one_call(
        self, redis: RedisServer, metrics: RateLimitMetrics
    ) -> None:
        """A share of 5 % of a 1,000-token bucket is 50 tokens: 200 decisions take 4 Redis calls."""
        limiter, backend = shared_limiter(redis, metrics, 0.05)
        await limiter.warm_up()
        policy = Policy.build("hot", "1000/minute")
        assert backend.share_of(policy.rates) == 50
        before = scripts(redis)
        decisions = [await limiter.hit(policy, "k") for _ in range(200)]
        assert all(d.allowed for d in decisions)
        assert scripts(redis) - before == 4
        assert decisions[-1].remaining == 800
        await limiter.close()

    @in_loop
    async def test_concurrent_decisions_of_a_key_wait_for_one_reservation(
        self, redis: RedisServer, metrics: RateLimitMetrics
    ) -> None:
        """30 decisions of one key in the same tick send one reservation, not 30."""
        limiter, _ = shared_limiter(redis, metrics, 0.05)
        await limiter.warm_up()
        policy = Policy.build("hot", "1000/minute")
        before = scripts(redis)
        decisions = await asyncio.gather(*(limiter.hit(policy, "k") for _ in range(30)))
        assert all(d.allowed for d in decisions)
        assert scripts(redis) - before == 1
        await limiter.close()

    @in_loop
    async def test_an_exhausted_bucket_admits_exactly_its_tokens_then_refuses_locally(
        self, redis: RedisServer, metrics: RateLimitMetrics
    ) -> None:
        """Alone on a key, the process admits exactly the burst (the last share is what is left), then
        refuses without asking Redis until a whole share is back."""
        limiter, _ = shared_limiter(redis, metrics, 0.1)
        await limiter.warm_up()
        policy = Policy.build("hot", "105/hour")  # shares of 10, then 5 left
        before = scripts(redis)
        decisions = [await limiter.hit(policy, "k") for _ in range(300)]
        assert sum(d.allowed for d in decisions) == 105
        refused = decisions[-1]
        assert not refused.allowed
        assert refused.retry_after == pytest.approx(10 * 3600 / 105, rel=0.01)
        # 10 full shares, one refused and one taking the 5 left, one refused: then local refusals.
        assert scripts(redis) - before == 13
        await limiter.close()

    @in_loop
    async def test_unspent_tokens_expire(self, redis: RedisServer, metrics: RateLimitMetrics) -> None:
        """A lease older than its lifetime is not spent: the next decision reserves a new share."""
        clock = Clock()
        limiter, backend = shared_limiter(redis, metrics, 0.05, clock)
        await limiter.warm_up()
        policy = Policy.build("hot", "1000/minute")
        before = scripts(redis)
        await limiter.hit(policy, "k")
        clock.now += backend.seconds - 0.01
        await limiter.hit(policy, "k")
        assert scripts(redis) - before == 1
        clock.now += 0.02
        await limiter.hit(policy, "k")
        assert scripts(redis) - before == 2
        await limiter.close()

    @in_loop
    async def test_a_forced_spend_goes_to_redis_and_its_debt_refuses_the_next_decision(
        self, redis: RedisServer, metrics: RateLimitMetrics
    ) -> None:
        """A charge after the fact is spent in Redis at once (the process's lease dropped), so the
        bucket's debt refuses this process's next decision and every other process's."""
        limiter, _ = shared_limiter(redis, metrics, 0.05)
        await limiter.warm_up()
        policy = Policy.build("hot", "1000/minute")
        assert (await limiter.hit(policy, "k")).allowed
        before = scripts(redis)
        charged = await limiter.hit(policy, "k", cost=5000, force=True)
        assert not charged.allowed  # it did not fit: the bucket is in debt now
        assert scripts(redis) - before == 1
        assert not (await limiter.hit(policy, "k")).allowed
        other, _ = shared_limiter(redis, metrics, 0.05)
        assert not (await other.hit(policy, "k")).allowed
        await limiter.close()
        await other.close()

    @in_loop
    async def test_a_share_no_larger_than_the_cost_asks_redis_every_time(
        self, redis: RedisServer, metrics: RateLimitMetrics
    ) -> None:
        """A small limit (share of one token) keeps one exact Redis call per decision."""
        limiter, backend = shared_limiter(redis, metrics, 0.05)
        await limiter.warm_up()
        policy = Policy.build("small", "10/minute")
        assert backend.share_of(policy.rates) == 1
        before = scripts(redis)
        decisions = [await limiter.hit(policy, "k") for _ in range(12)]
        assert [d.allowed for d in decisions] == [True] * 10 + [False] * 2
        assert scripts(redis) - before == 12
        await limiter.close()


PROCESSES = 8
RATE = 100
BURST = 6000
SHARE = 0.01
SECONDS = 3.0


@pytest.mark.slow
class TestManyProcesses:
    def test_eight_processes_on_one_key_stay_within_the_bound_at_a_fraction_of_the_calls(
        self, redis: RedisServer
    ) -> None:
        """8 OS processes hammering one key with a 1 % share: at most 0.1 Redis calls per decision, and
        admissions within [exact - (P + 1) x S, exact + P x S] of one exact bucket."""
        share = int(SHARE * BURST)
        start_at = time.time() + 3.0
        rate = f"{RATE}/second burst={BURST}"
        argv = [sys.executable, "-m", "tests.ratelimit.hammer", redis.url, "share:", rate, str(SECONDS)]
        redis.cli("CONFIG", "RESETSTAT")
        workers = [Background([*argv, str(start_at), str(SHARE)], cwd=ROOT) for _ in range(PROCESSES)]
        try:
            for worker in workers:
                assert worker.wait(SECONDS + 60) == 0, worker.stderr()
            results = [orjson.loads(worker.stdout().strip().splitlines()[-1]) for worker in workers]
        finally:
            for worker in workers:
                worker.close()
        assert sum(r["errors"] for r in results) == 0
        decisions = sum(r["total"] for r in results)
        admitted = sum(r["admitted"] for r in results)
        elapsed = max(r["last"] for r in results) - min(r["first"] for r in results)
        exact = BURST + RATE * elapsed
        assert exact - (PROCESSES + 1) * share <= admitted <= exact + PROCESSES * share
        assert decisions > 2 * admitted  # the key was really under pressure
        assert scripts(redis) / decisions <= 0.1
        assert all(r["admitted"] > 0 for r in results)
