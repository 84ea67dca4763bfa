"""Fixtures of the rate-limit tests: backends over real Redis servers and a private metrics registry."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from opskit.metrics import REGISTRY, Registry
from opskit.metrics.exposition import render
from opskit.ratelimit import MemoryBackend, RateLimiter
from opskit.ratelimit.breaker import CircuitBreaker
from opskit.ratelimit.metrics import RateLimitMetrics
from opskit.ratelimit.redis_backend import redis_backend
from tests.servers import RedisClusterServers, RedisServer, redis_cluster, redis_server

LimiterFactory = Callable[..., RateLimiter]
# "redis" decides over opskit's pipelined channel, "redis-pool" through redis-py's client.
BACKENDS = ["memory", "redis", "redis-pool", "cluster"]


@pytest.fixture(scope="session")
def shared_redis() -> Iterator[RedisServer]:
    """One redis-server for the semantic tests (each test writes under its own key prefix)."""
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def cluster() -> Iterator[RedisClusterServers]:
    """A 3-master Redis Cluster built with `redis-cli --cluster create`, shared by the tests."""
    with redis_cluster(3) as servers:
        yield servers


@pytest.fixture
def registry() -> Iterator[Registry]:
    r = Registry(None)
    yield r
    r.close()


@pytest.fixture
def metrics(registry: Registry) -> RateLimitMetrics:
    return RateLimitMetrics(registry)


def sample(registry: Registry | None, name: str, **labels: str) -> float:
    """The current value of one sample as ``/metrics`` exposes it (0 when absent).

    ``None`` reads the process registry that ``/metrics`` serves.
    """
    text = render((registry or REGISTRY).collect(), openmetrics=False).decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


@pytest.fixture
def prefix() -> str:
    return f"opskit-test:{uuid.uuid4().hex[:8]}:"


def redis_limiter(
    url: str,
    prefix: str,
    metrics: RateLimitMetrics,
    *,
    timeout: float = 0.5,
    batch: bool = True,
    pipelined: bool = True,
    **options: Any,
) -> RateLimiter:
    """A limiter on a Redis backend (create it inside the event loop that uses it)."""
    backend = redis_backend(url, timeout=timeout, max_connections=8, batch=batch, pipelined=pipelined)
    options.setdefault("breaker", CircuitBreaker(3, 0.5))
    return RateLimiter(backend, prefix=prefix, metrics=metrics, **options)


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_limiter(
    backend_kind: str, request: pytest.FixtureRequest, prefix: str, metrics: RateLimitMetrics
) -> LimiterFactory:
    """Build a limiter of the parametrized backend kind: memory, single Redis or Redis Cluster."""
    url = ""
    if backend_kind in ("redis", "redis-pool"):
        url = request.getfixturevalue("shared_redis").url
    elif backend_kind == "cluster":
        url = request.getfixturevalue("cluster").url

    def make(**options: Any) -> RateLimiter:
        if not url:
            return RateLimiter(MemoryBackend(), prefix=prefix, metrics=metrics)
        options.setdefault("pipelined", backend_kind != "redis-pool")
        return redis_limiter(url, prefix, metrics, **options)

    return make
