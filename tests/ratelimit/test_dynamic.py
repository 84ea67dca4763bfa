"""Dynamic limits: rates by plan, keys from dependencies, costs per request, charges after the fact."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator

import httpx2 as httpx
import pytest
from fastapi import Depends, FastAPI, Request
from starlette.testclient import TestClient

from opskit.metrics import Registry
from opskit.ratelimit import MemoryBackend, Rate, RateLimit, RateLimiter, charge
from opskit.ratelimit.dynamic import RateCache, as_rates
from opskit.ratelimit.metrics import RateLimitMetrics
from tests.ratelimit import plans
from tests.ratelimit.conftest import sample
from tests.servers import Background, RedisServer, listening_socket, wait_for_port

ALICE = {"x-api-key": "key-alice"}  # free plan: 2/minute
BOB = {"x-api-key": "key-bob"}  # pro plan: 5/minute


def client() -> TestClient:
    return TestClient(plans.create(), raise_server_exceptions=False)


class TestRatesByPlan:
    def test_each_plan_gets_its_rate(self) -> None:
        """The rate function reads the user the auth dependency resolved: free passes 2, pro 5, per user."""
        with client() as c:
            free = [c.get("/plan", headers=ALICE) for _ in range(3)]
            pro = [c.get("/plan", headers=BOB).status_code for _ in range(6)]
            anonymous = [c.get("/plan").status_code for _ in range(8)]
        assert [r.status_code for r in free] == [200, 200, 429]
        assert free[0].json() == {"user": "alice"}
        assert free[0].headers["ratelimit-policy"] == '"/plan";q=2;w=60'
        assert free[2].json() == {"detail": "Rate limit exceeded: 2 per 1 minute"}
        assert pro == [200] * 5 + [429]
        assert anonymous == [200] * 8  # the key dependency returned None: not limited

    def test_rates_are_looked_up_once_per_key(self) -> None:
        """Six requests of one user run the (async) rate function once: its result is cached per key."""
        plans.LOOKUPS.clear()
        with client() as c:
            for _ in range(6):
                c.get("/plan", headers={"x-api-key": "key-carol"})
        assert plans.LOOKUPS["carol"] == 1

    def test_sync_rate_function_of_the_request_returning_rates(self) -> None:
        """A sync function of the request may return Rate objects; keys still count separately."""
        with client() as c:
            a = [c.get("/burst", headers={"x-api-key": "a"}).status_code for _ in range(4)]
            b = c.get("/burst", headers={"x-api-key": "b"}).status_code
        assert (a, b) == ([200, 200, 200, 429], 200)

    def test_cache_expiry_picks_up_a_plan_change(self) -> None:
        """With cache_seconds=0 the function runs per request: an upgraded plan applies to the same bucket."""
        plan = {"user": "2/minute"}
        limit = RateLimit(lambda request: plan["user"], name="upgrade", cache_seconds=0)
        app = FastAPI()

        @app.get("/", dependencies=[Depends(limit)])
        async def root() -> dict[str, str]:
            return {}

        with TestClient(app) as c:
            first = c.get("/").status_code
            plan["user"] = "4/minute"
            upgraded = [c.get("/").status_code for _ in range(3)]
        # Half the bucket was used (1 of 2); half of the new bucket of 4 is left: 2 more pass, not 1.
        assert first == 200
        assert upgraded == [200, 200, 429]

    def test_a_bad_rate_from_the_function_is_an_error_not_a_pass(self) -> None:
        """A rate function returning nonsense fails the request (500), it never lets it through unlimited."""
        app = FastAPI()

        @app.get("/", dependencies=[Depends(RateLimit(lambda request: "often"))])
        async def root() -> dict[str, str]:
            return {}

        with TestClient(app, raise_server_exceptions=False) as c:
            assert c.get("/").status_code == 500


class TestCosts:
    def test_cost_function_of_the_request(self) -> None:
        """An export of 4 pages takes 4 of 10 tokens: two pass, the third does not fit, a 2-page one does."""
        with client() as c:
            got = [c.get("/export", params={"pages": n}).status_code for n in (4, 4, 4, 2)]
        assert got == [200, 200, 429, 200]


class TestCharges:
    def test_charge_after_the_response_puts_the_key_in_debt(self) -> None:
        """A completion charged 150 tokens by a background task (after its response) leaves the bucket of 100
        in debt: that user's next request is refused, with the time the debt takes to refill; others pass."""
        with client() as c:
            done = c.post("/complete", params={"used": 150}, headers=BOB)
            refused = c.post("/complete", params={"used": 1}, headers=BOB)
            other = c.post("/complete", params={"used": 1}, headers=ALICE)
        assert done.status_code == 200
        assert done.headers["ratelimit"] == '"tokens";r=99;t=1'
        assert refused.status_code == 429
        # 151 tokens spent of 100 at 0.6 s each: the next token fits 31.2 s from now.
        assert 31 <= int(refused.headers["retry-after"]) <= 32
        assert other.status_code == 200

    def test_charge_from_a_streaming_body(self) -> None:
        """A charge made while the body streams (the response has started) counts too."""
        with client() as c:
            streamed = c.post("/stream", params={"used": 120}, headers={"x-api-key": "key-carol"})
            after = c.post("/stream", params={"used": 1}, headers={"x-api-key": "key-carol"})
        assert streamed.text == "partial done"
        assert after.status_code == 429

    def test_charge_without_a_chargeable_limit_raises(self) -> None:
        """charge() on a request no chargeable limit admitted raises LookupError: a charge never goes nowhere."""
        with client() as c:
            got = c.get("/uncharged").json()
        assert "no chargeable rate limit" in got["error"]

    def test_charges_are_not_counted_as_decisions(self) -> None:
        """Only the admission counts in opskit_ratelimit_decisions_total, not the charge."""
        registry = Registry(None)
        limiter = RateLimiter(MemoryBackend(), metrics=RateLimitMetrics(registry))
        app = FastAPI()

        @app.get("/", dependencies=[Depends(RateLimit("10/minute", name="bill", chargeable=True, limiter=limiter))])
        async def root(request: Request) -> dict[str, bool]:
            decisions = await charge(30, request=request)
            return {"fitted": decisions[0].allowed}

        with TestClient(app) as c:
            first = c.get("/")
            second = c.get("/")
        assert first.json() == {"fitted": False}
        assert second.status_code == 429
        assert sample(registry, "opskit_ratelimit_decisions_total", policy="bill", decision="allowed") == 1
        assert sample(registry, "opskit_ratelimit_decisions_total", policy="bill", decision="limited") == 1
        asyncio.run(limiter.close())


class TestRateValues:
    def test_as_rates_accepts_text_rates_and_sequences(self) -> None:
        """Rate texts, a Rate and sequences of Rates are rates; anything else is a ValueError naming it."""
        rate = Rate(amount=5, period=1.0, burst=10)
        assert as_rates("5/second burst=10") == (rate,)
        assert as_rates(rate) == as_rates([rate]) == (rate,)
        for bad in (5, [], ["5/second"], object()):
            with pytest.raises(ValueError, match="rate function returned"):
                as_rates(bad)

    def test_cache_is_bounded(self) -> None:
        """The per-key cache keeps at most max_keys entries, dropping the least recently used."""
        calls: list[str] = []

        def source(subject: object) -> str:
            calls.append(str(subject))
            return "1/second"

        cache = RateCache(source, seconds=60, max_keys=2)

        async def scenario() -> None:
            for key in ("a", "b", "a", "c", "a", "b"):
                await cache.rates(key, key)

        asyncio.run(scenario())
        assert calls == ["a", "b", "c", "b"]


@pytest.fixture
def plans_server(redis: RedisServer) -> Iterator[str]:
    """The plans app under uvicorn with 2 workers, its limits in a real Redis."""
    env = {"OPSKIT_REDIS_URL": redis.url, "OPSKIT_REDIS_TIMEOUT": "0.5", "PYTHONUNBUFFERED": "1"}
    sock = listening_socket()
    port = sock.getsockname()[1]
    argv = [sys.executable, "-m", "uvicorn", "tests.ratelimit.plans:served", "--factory", "--fd", str(sock.fileno())]
    proc = Background([*argv, "--workers", "2"], env=env, pass_fds=[sock.fileno()])
    sock.close()
    try:
        wait_for_port(port)
        base = f"http://127.0.0.1:{port}"
        httpx.get(base + "/healthz", timeout=30)
        yield base
    finally:
        proc.close()


@pytest.mark.slow
class TestServed:
    def test_plans_and_charges_through_a_real_server_and_redis(self, plans_server: str, redis: RedisServer) -> None:
        """Over HTTP, with 2 workers sharing Redis: free passes 2, pro 5; a completion charged 150 tokens after
        its response leaves that user in debt (429 on every worker) while another user passes."""
        with httpx.Client(base_url=plans_server, timeout=10) as c:
            free = [c.get("/plan", headers=ALICE).status_code for _ in range(3)]
            pro = [c.get("/plan", headers=BOB).status_code for _ in range(6)]
            done = c.post("/complete", params={"used": 150}, headers=BOB)
            # The charge runs after the response: wait until Redis holds the debt (the TAT 90 s ahead).
            deadline = time.monotonic() + 10
            refused = [c.post("/complete", params={"used": 1}, headers=BOB) for _ in range(4)]
            while any(r.status_code == 200 for r in refused) and time.monotonic() < deadline:
                time.sleep(0.05)
                refused = [c.post("/complete", params={"used": 1}, headers=BOB) for _ in range(4)]
            other = c.post("/complete", params={"used": 1}, headers=ALICE)
        assert free == [200, 200, 429]
        assert pro == [200] * 5 + [429]
        assert done.status_code == 200
        assert [r.status_code for r in refused] == [429] * 4
        assert int(refused[0].headers["retry-after"]) >= 25
        assert refused[0].headers["ratelimit-policy"] == '"tokens";q=100;w=60'
        assert other.status_code == 200
        assert any(key.startswith("opskit:rl:tokens:{") for key in redis.cli("--scan").split())
