"""Route limits with the `RateLimit` FastAPI dependency."""

from __future__ import annotations

import asyncio

from fastapi import Depends, FastAPI
from starlette.testclient import TestClient

from opskit.metrics import Registry
from opskit.ratelimit import MemoryBackend, RateLimiter
from opskit.ratelimit.dependency import RateLimit
from opskit.ratelimit.metrics import RateLimitMetrics
from tests.conftest import LogReader
from tests.ratelimit.apps import create
from tests.ratelimit.conftest import sample


def client() -> TestClient:
    return TestClient(create(), raise_server_exceptions=False)


class TestRouteLimits:
    def test_route_limit_answers_429_in_fastapi_shape(self) -> None:
        """The 3rd call of a 2/minute route is 429 {"detail"} with Retry-After and RateLimit fields named after
        the route; other routes are untouched."""
        with client() as c:
            ok = [c.get("/search") for _ in range(2)]
            refused = c.get("/search")
            assert c.get("/items/1").status_code == 200
        assert [r.status_code for r in ok] == [200, 200]
        assert ok[0].headers["ratelimit"] == '"/search";r=1;t=30'
        assert refused.status_code == 429
        assert refused.json() == {"detail": "Rate limit exceeded: 2 per 1 minute"}
        assert refused.headers["retry-after"] == "30"
        assert refused.headers["ratelimit-policy"] == '"/search";q=2;w=60'

    def test_several_limits_on_one_route_all_apply(self, log_lines: LogReader) -> None:
        """A loose and a tight limit on one route: the tight one refuses, and the access log names it."""
        with client() as c:
            log_lines()
            got = [c.get("/report") for _ in range(3)]
            lines = [line for line in log_lines() if line.get("event") == "request"]
        assert [r.status_code for r in got] == [200, 200, 429]
        assert len(got[0].headers.get_list("ratelimit")) == 2
        assert got[2].headers["ratelimit"] == '"tight";r=0;t=60'
        assert lines[-1]["ratelimit_policy"] == "tight"

    def test_callable_key(self) -> None:
        """A key function taking the request (here a tenant header) gives each tenant its own bucket."""
        with client() as c:
            a = [c.get("/tenant", headers={"x-tenant": "a"}).status_code for _ in range(2)]
            b = c.get("/tenant", headers={"x-tenant": "b"}).status_code
            unkeyed = [c.get("/tenant").status_code for _ in range(3)]
        assert (a, b) == ([200, 429], 200)
        assert unkeyed == [200] * 3  # the key function returned None: not limited

    def test_explicit_limiter_without_instrument(self) -> None:
        """Without opskit's middleware the dependency uses the limiter it was given."""
        registry = Registry(None)
        limiter = RateLimiter(MemoryBackend(), metrics=RateLimitMetrics(registry))
        app = FastAPI()

        @app.get("/", dependencies=[Depends(RateLimit("1/minute", name="bare", limiter=limiter))])
        async def root() -> dict[str, str]:
            return {}

        with TestClient(app) as c:
            assert [c.get("/").status_code for _ in range(2)] == [200, 429]
        assert sample(registry, "opskit_ratelimit_decisions_total", policy="bare", decision="limited")
        asyncio.run(limiter.close())
