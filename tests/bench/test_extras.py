"""The limiter yardstick: the reference token bucket and the raw EVALSHA rate."""

from __future__ import annotations

import pytest

from bench.extras import REFERENCE_TOKEN_BUCKET, SCRIPT_ARGS, limiter_script
from bench.servers import redis_benchmark_evalsha
from tests.servers import RedisServer

pytestmark = pytest.mark.slow


class TestReferenceTokenBucket:
    """The script redis-benchmark runs when opskit ships none is a real token bucket."""

    def test_burst_then_reject_and_ttl(self, redis: RedisServer) -> None:
        """Burst 2 at 1 token/s: two calls pass, the third is refused, and the key expires."""
        args = ("1", "k", "1", "0", "1000000", "2")  # cost, force, microseconds per token, burst
        calls = [redis.cli("EVAL", REFERENCE_TOKEN_BUCKET, *args).strip() for _ in range(3)]
        assert calls == ["1", "1", "0"]
        assert 0 < int(redis.cli("PTTL", "k").strip()) <= 3000


class TestRedisBenchmark:
    """``redis_benchmark_evalsha`` runs the real redis-benchmark against a private Redis."""

    def test_reports_a_rate(self, redis: RedisServer) -> None:
        """A short run yields a positive EVALSHA rate and really called the script."""
        rate = redis_benchmark_evalsha(redis, REFERENCE_TOKEN_BUCKET, SCRIPT_ARGS, requests=2000, clients=4, cpu=None)
        assert rate > 0
        assert "cmdstat_evalsha:calls=2000," in redis.cli("INFO", "commandstats")


class TestLimiterScript:
    """The script the raw EVALSHA rate is measured with."""

    def test_a_script_that_runs_is_chosen(self, redis: RedisServer) -> None:
        """Whichever script is chosen (opskit's or the reference) answers the benchmark's arguments."""
        source, script = limiter_script(redis)
        assert source
        reply = redis.cli("EVAL", script, "1", "bench:k", *SCRIPT_ARGS)
        assert reply.strip() and not reply.startswith("ERR")
