"""The global limit inside opskit's middleware: 429s, RateLimit fields, exemptions, proxies, logs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import LogReader
from tests.ratelimit.apps import create
from tests.ratelimit.conftest import sample
from tests.servers import RedisServer


@contextmanager
def serve(peer: str = "203.0.113.7", **settings: Any) -> Iterator[TestClient]:
    with TestClient(create(**settings), raise_server_exceptions=False, client=(peer, 40000)) as client:
        yield client


def statuses(client: TestClient, n: int, path: str = "/items/1", **kwargs: Any) -> list[int]:
    return [client.get(path, **kwargs).status_code for _ in range(n)]


class TestGlobalLimit:
    @pytest.mark.parametrize("backend", ["memory", "redis"])
    def test_burst_then_refill(self, backend: str, request: pytest.FixtureRequest) -> None:
        """Burst 10 at 5/s over HTTP: 10 pass, the 11th is 429 JSON with Retry-After: 1, 5 pass a second later."""
        url = request.getfixturevalue("redis").url if backend == "redis" else ""
        with serve(rate_limit="5/second burst=10", redis_url=url) as client:
            assert statuses(client, 10) == [200] * 10
            refused = client.get("/items/1")
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "1"
            assert refused.json() == {"detail": "Rate limit exceeded: 5 per 1 second (burst 10)"}
            assert refused.headers["ratelimit"] == '"global";r=0;t=2'
            time.sleep(1.0)
            assert statuses(client, 5) == [200] * 5

    def test_ietf_fields_on_allowed_responses(self) -> None:
        """Allowed responses carry RateLimit-Policy (q = bucket, w = refill seconds) and RateLimit (r, t)."""
        with serve(rate_limit="5/second burst=10") as client:
            r = client.get("/items/1")
        assert r.headers["ratelimit-policy"] == '"global";q=10;w=2'
        assert r.headers["ratelimit"] == '"global";r=9;t=1'
        assert "x-ratelimit-limit" not in r.headers

    def test_legacy_trio_and_switching_headers_off(self) -> None:
        """The X-RateLimit-* trio is opt-in; with headers off, allowed responses carry none, 429s still do."""
        with serve(rate_limit="2/minute", rate_limit_legacy_headers=True) as client:
            r = client.get("/items/1")
        assert (r.headers["x-ratelimit-limit"], r.headers["x-ratelimit-remaining"]) == ("2", "1")
        assert r.headers["x-ratelimit-reset"] == "30"
        with serve(rate_limit="1/minute", rate_limit_headers=False) as client:
            assert "ratelimit" not in client.get("/items/1").headers
            assert "ratelimit" in client.get("/items/1").headers

    def test_off_unless_set(self) -> None:
        """Without OPSKIT_RATE_LIMIT nothing is limited and no fields are added."""
        with serve() as client:
            responses = [client.get("/items/1") for _ in range(30)]
        assert {r.status_code for r in responses} == {200}
        assert "ratelimit" not in responses[0].headers


class TestExemptions:
    def test_exempt_paths(self) -> None:
        """Paths matching OPSKIT_RATE_LIMIT_EXEMPT_PATHS (prefix with *) are never limited; health never is."""
        with serve(rate_limit="1/minute", rate_limit_exempt_paths="/public/*") as client:
            assert statuses(client, 5, "/public/info") == [200] * 5
            assert statuses(client, 5, "/healthz") == [200] * 5
            assert statuses(client, 2) == [200, 429]

    def test_exempt_networks(self) -> None:
        """Clients inside OPSKIT_RATE_LIMIT_EXEMPT_NETWORKS are never limited; others are."""
        settings = {"rate_limit": "1/minute", "rate_limit_exempt_networks": "10.0.0.0/8"}
        with serve("10.1.2.3", **settings) as client:
            assert statuses(client, 5) == [200] * 5
        with serve("192.0.2.1", **settings) as client:
            assert statuses(client, 2) == [200, 429]


class TestClientKeys:
    def test_spoofed_forwarded_for_changes_nothing(self) -> None:
        """From an untrusted peer, a new X-Forwarded-For on every request does not buy a new bucket."""
        with serve(rate_limit="2/minute") as client:
            got = [client.get("/items/1", headers={"x-forwarded-for": f"198.51.100.{i}"}).status_code for i in range(4)]
        assert got == [200, 200, 429, 429]

    def test_trusted_proxy_forwards_the_client(self) -> None:
        """Behind a trusted proxy each forwarded client has its own bucket."""
        with serve("10.0.0.1", rate_limit="1/minute", trusted_proxies="10.0.0.0/8") as client:
            a = [client.get("/items/1", headers={"x-forwarded-for": "198.51.100.1"}).status_code for _ in range(2)]
            b = client.get("/items/1", headers={"x-forwarded-for": "198.51.100.2"}).status_code
        assert (a, b) == ([200, 429], 200)

    def test_header_key_with_address_fallback(self) -> None:
        """rate_limit_key=header:X-API-Key counts per key; leaving the header out falls back to the address."""
        with serve(rate_limit="1/minute", rate_limit_key="header:X-API-Key") as client:
            assert statuses(client, 2, headers={"x-api-key": "alpha"}) == [200, 429]
            assert statuses(client, 1, headers={"x-api-key": "beta"}) == [200]
            assert statuses(client, 2) == [200, 429]


class TestObservability:
    def test_rejection_names_the_policy_in_the_access_log_and_metrics(self, log_lines: LogReader) -> None:
        """The access-log line of a 429 says which policy refused it; decisions are counted by policy."""

        def count(decision: str) -> float:
            labels = {"policy": "global", "decision": decision}
            return sample(None, "opskit_ratelimit_decisions_total", **labels)

        before = (count("allowed"), count("limited"))
        with serve(rate_limit="1/minute") as client:
            log_lines()
            assert statuses(client, 2) == [200, 429]
            lines = [line for line in log_lines() if line.get("event") == "request"]
        assert [line.get("ratelimit_policy") for line in lines] == [None, "global"]
        assert (count("allowed"), count("limited")) == (before[0] + 1, before[1] + 1)

    def test_per_process_limits_are_announced(self, log_lines: LogReader) -> None:
        """Without OPSKIT_REDIS_URL the startup log says limits are per process."""
        with serve(rate_limit="1/minute"):
            pass
        assert any("per-process" in line.get("event", "") for line in log_lines())

    def test_readiness_follows_redis_when_asked(self, redis: RedisServer) -> None:
        """With rate_limit_readiness_check, /readyz fails while Redis is down."""
        with serve(rate_limit="100/second", redis_url=redis.url, rate_limit_readiness_check=True) as client:
            assert client.get("/readyz").status_code == 200
            redis.kill()
            ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["failed"] == ["ratelimit_redis"]
