"""Redis failures: killed, frozen, back again. Fail-open by default, 503 when closed, never a 500."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

import opskit
from opskit.metrics import Registry
from opskit.ratelimit import Decision, Policy, RateLimiter
from opskit.ratelimit.breaker import CircuitBreaker
from opskit.ratelimit.metrics import RateLimitMetrics
from opskit.throttle import ThrottledLog
from tests.ratelimit.conftest import redis_limiter, sample
from tests.servers import RedisServer

TIMEOUT = 0.05
MARGIN = 0.45  # scheduling slack on a busy machine; the point is "bounded" (vs. seconds), not "fast"


async def timed(limiter: RateLimiter, policy: Policy, key: str) -> tuple[Decision, float]:
    started = time.perf_counter()
    decision = await limiter.hit(policy, key)
    return decision, time.perf_counter() - started


async def load(limiter: RateLimiter, policy: Policy, seconds: float) -> list[tuple[Decision, float]]:
    """Waves of 20 concurrent decisions for ``seconds``."""
    results: list[tuple[Decision, float]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        results += await asyncio.gather(*(timed(limiter, policy, f"c{i}") for i in range(20)))
        await asyncio.sleep(0.01)
    return results


async def until_shared_again(limiter: RateLimiter, policy: Policy, limit: float = 5.0) -> float:
    """Seconds until decisions come from Redis again (not from the failure policy)."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        decision = await limiter.hit(policy, "probe")
        if decision.outcome in ("allowed", "limited"):
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"limiting did not resume within {limit}s")


class TestRedisKilled:
    def test_fail_open_under_load(self, redis: RedisServer) -> None:
        """Killed mid-load: every request is still answered (allowed) within the timeout; limiting resumes
        within 5 s of Redis returning; every failure is counted by reason."""
        registry = Registry(None)
        policy = Policy.build("killed", "1000/second")

        async def scenario() -> tuple[list[tuple[Decision, float]], list[tuple[Decision, float]], float]:
            limiter = redis_limiter(redis.url, "rl:", RateLimitMetrics(registry), timeout=TIMEOUT)
            await limiter.warm_up()
            before = await load(limiter, policy, 0.3)
            redis.kill()
            during = await load(limiter, policy, 1.0)
            redis.start()
            resumed = await until_shared_again(limiter, Policy.build("probe", "1000/second"))
            await limiter.close()
            return before, during, resumed

        before, during, resumed = asyncio.run(scenario())
        assert {d.outcome for d, _ in before} == {"allowed"}
        assert {d.outcome for d, _ in during} == {"error_allowed"}
        assert max(elapsed for _, elapsed in during) < TIMEOUT + MARGIN
        assert resumed < 5.0
        errors = sample(registry, "opskit_ratelimit_backend_errors_total", reason="connection")
        paused = sample(registry, "opskit_ratelimit_backend_errors_total", reason="circuit_open")
        assert errors >= 1 and paused >= 1
        assert sample(registry, "opskit_ratelimit_decisions_total", policy="killed", decision="error_allowed") == len(
            during
        )

    def test_memory_fallback_keeps_limiting(self, redis: RedisServer) -> None:
        """on_error=memory: with Redis dead, a per-process bucket still refuses the 4th request of a burst of 3."""
        policy = Policy.build("fallback", "1/minute burst=3")

        async def scenario() -> list[Decision]:
            metrics = RateLimitMetrics(Registry(None))
            limiter = redis_limiter(redis.url, "rl:", metrics, timeout=TIMEOUT, on_error="memory")
            redis.kill()
            decisions = [await limiter.hit(policy, "alice") for _ in range(4)]
            await limiter.close()
            return decisions

        decisions = asyncio.run(scenario())
        assert [d.outcome for d in decisions] == ["error_allowed"] * 3 + ["error_rejected"]
        assert not decisions[3].unavailable  # a limit, answered 429


class TestRedisFrozen:
    def test_timeout_holds(self, redis: RedisServer) -> None:
        """SIGSTOP: the port accepts but nothing answers; decisions still return within the timeout, and
        after SIGCONT decisions are right again."""
        policy = Policy.build("frozen", "1000/second")

        after = Policy.build("after-thaw", "1/minute burst=2")

        async def scenario() -> tuple[list[tuple[Decision, float]], list[Decision]]:
            limiter = redis_limiter(redis.url, "rl:", RateLimitMetrics(Registry(None)), timeout=TIMEOUT)
            await limiter.warm_up()
            redis.freeze()
            try:
                frozen = await load(limiter, policy, 0.5)
            finally:
                redis.thaw()
            await until_shared_again(limiter, policy)
            # Replies cut off by the timeout must not be read as answers to later decisions.
            thawed = [await limiter.hit(after, "alice") for _ in range(3)]
            await limiter.close()
            return frozen, thawed

        frozen, thawed = asyncio.run(scenario())
        assert {d.outcome for d, _ in frozen} == {"error_allowed"}
        assert max(elapsed for _, elapsed in frozen) < TIMEOUT + MARGIN
        assert [d.outcome for d in thawed] == ["allowed", "allowed", "limited"]


def app_with_limit(redis: RedisServer, **settings: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    opskit.instrument(
        app,
        rate_limit="1000/second",
        redis_url=redis.url,
        redis_timeout=TIMEOUT,
        rate_limit_breaker_seconds=0.5,
        **settings,
    )
    return app


class TestFailClosed:
    def test_503_never_500_and_recovery(self, redis: RedisServer) -> None:
        """on_error=reject: with Redis dead every request gets 503 JSON with Retry-After; 200 again once it is back."""
        with TestClient(app_with_limit(redis, rate_limit_on_error="reject"), raise_server_exceptions=False) as client:
            assert client.get("/items/1").status_code == 200
            redis.kill()
            statuses = [client.get("/items/1") for _ in range(20)]
            assert {r.status_code for r in statuses} == {503}
            assert statuses[0].json() == {"detail": "Rate limiter unavailable"}
            assert int(statuses[0].headers["retry-after"]) >= 1
            redis.start()
            deadline = time.monotonic() + 5
            while client.get("/items/1").status_code != 200:
                assert time.monotonic() < deadline, "limiting did not resume within 5 s"
                time.sleep(0.05)

    def test_fail_open_app_keeps_serving(self, redis: RedisServer) -> None:
        """Default on_error=allow: with Redis dead the app answers 200, without RateLimit fields."""
        with TestClient(app_with_limit(redis), raise_server_exceptions=False) as client:
            assert "ratelimit" in client.get("/items/1").headers
            redis.kill()
            responses = [client.get("/items/1") for _ in range(10)]
            assert {r.status_code for r in responses} == {200}


class TestBoundedLogging:
    def test_one_line_per_reason_per_interval(self, caplog: pytest.LogCaptureFixture) -> None:
        """A thousand failures in one interval write one line per reason; the next line counts those held back."""
        now = [0.0]
        log = ThrottledLog(logging.getLogger("opskit.ratelimit.test"), interval=10.0, clock=lambda: now[0])
        with caplog.at_level(logging.WARNING, logger="opskit.ratelimit.test"):
            written = [log.warning("timeout", "backend timed out") for _ in range(1000)]
            written.append(log.warning("connection", "backend refused"))
            now[0] = 10.0
            written.append(log.warning("timeout", "backend timed out"))
        assert written.count(True) == 3
        assert [r.getMessage() for r in caplog.records] == ["backend timed out", "backend refused", "backend timed out"]
        assert caplog.records[-1].suppressed == 999  # type: ignore[attr-defined]


class TestCircuitBreaker:
    def test_opens_after_failures_and_closes_after_pause(self) -> None:
        """3 consecutive failures open it for the pause; afterwards one failure reopens it, one success closes it."""
        now = [0.0]
        breaker = CircuitBreaker(failures=3, open_seconds=2.0, clock=lambda: now[0])
        assert [breaker.failure() for _ in range(3)] == [False, False, True]
        assert not breaker.closed
        now[0] = 2.0
        assert breaker.closed
        assert breaker.failure() and not breaker.closed
        now[0] = 4.0
        breaker.success()
        assert breaker.closed and not breaker.failure()
