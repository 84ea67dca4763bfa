"""The Redis timeout is a hard bound on every client path, and a healthy Redis does not time out.

Paths: opskit's pipelined channel (plain ``redis://``), redis-py's pool and pipeline (Sentinel,
Cluster nodes, URLs with options), the same over TLS. Each is driven by 50 concurrent callers, as
requests would.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from opskit.ratelimit.decision import BackendError
from opskit.ratelimit.rate import parse_rates
from opskit.ratelimit.redis_backend import RedisBackend, redis_backend
from tests.servers import RedisServer, TlsRedisServer

TIMEOUT = 0.05
CALLERS = 50
# Against a frozen server all callers time out in the same few loop turns, where each abandoned call
# winds down too: up to 1.5 ms each through redis-py's exception path on Python 3.10 (122 ms in all
# for 50 callers was seen). So the slowest decision may end that much after its deadline, plus
# scheduling on a shared 2-core machine; a call left waiting for a socket timeout would take seconds.
FROZEN_SLACK = 0.03 + CALLERS * 0.002
RATES = parse_rates("1000000/second")
PATHS = {
    "channel": {"pipelined": True},
    "redis-py": {"pipelined": False},
    "redis-py-tls": {"pipelined": False, "tls": True},
}


@pytest.fixture(params=list(PATHS))
def path(request: pytest.FixtureRequest) -> Iterator[tuple[RedisServer, dict[str, bool]]]:
    options = dict(PATHS[request.param])
    server = TlsRedisServer() if options.pop("tls", False) else RedisServer()
    try:
        yield server, options
    finally:
        server.close()


async def drive(backend: RedisBackend, seconds: float, callers: int = CALLERS) -> tuple[list[float], Counter[str]]:
    """Decisions from ``callers`` concurrent loops for ``seconds``: each one's latency, and errors by reason."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    deadline = time.monotonic() + seconds

    async def caller(n: int) -> None:
        i = 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                await backend.decide(f"t:{n}:{i}", RATES)
            except BackendError as exc:
                errors[exc.reason] += 1
            latencies.append(time.perf_counter() - started)
            i += 1
            await asyncio.sleep(0.001)

    await asyncio.gather(*(caller(n) for n in range(callers)))
    return latencies, errors


@pytest.mark.slow
class TestFrozenRedis:
    # Connection attempts cut off by the deadline against a frozen server leave sockets that only the
    # garbage collector closes (with a ResourceWarning). They are collected here, inside this test,
    # not in whichever later test the collector happens to run in.
    @pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
    @pytest.mark.filterwarnings("ignore::ResourceWarning")
    def test_every_decision_returns_within_the_timeout(self, path: tuple[RedisServer, dict[str, bool]]) -> None:
        """SIGSTOP: connections open but nothing answers; every decision ends within timeout + slack,
        those that were waiting for a connection or a TLS handshake too."""
        server, options = path
        gc.freeze()  # the test process's own full collections are not what this measures

        async def scenario() -> tuple[list[float], Counter[str]]:
            backend = redis_backend(server.url, timeout=TIMEOUT, max_connections=16, **options)
            assert await backend.warm_up()
            server.freeze()
            try:
                return await drive(backend, 1.0)
            finally:
                server.thaw()
                await backend.close()

        try:
            latencies, errors = asyncio.run(scenario())
        finally:
            gc.unfreeze()
            gc.collect()
        assert len(latencies) > 500
        assert set(errors) <= {"timeout", "connection"} and sum(errors.values()) == len(latencies)
        assert max(latencies) < TIMEOUT + FROZEN_SLACK, f"slowest decision {max(latencies) * 1000:.0f} ms"


@pytest.mark.slow
class TestHealthyRedis:
    def test_no_timeouts_under_load_with_a_busy_event_loop(self, path: tuple[RedisServer, dict[str, bool]]) -> None:
        """Thousands of decisions while other work blocks the loop for 60 ms at a time (a CPU-heavy
        request, a GC pause): a reply that arrived in time is never counted as a timeout."""
        server, options = path

        async def busy_neighbour(until: float) -> None:
            while time.monotonic() < until:
                await asyncio.sleep(0.15)
                time.sleep(0.06)  # noqa: ASYNC251 (blocking on purpose: the stall under test)

        async def scenario() -> tuple[list[float], Counter[str]]:
            backend = redis_backend(server.url, timeout=TIMEOUT, max_connections=16, **options)
            assert await backend.warm_up()
            neighbour = asyncio.create_task(busy_neighbour(time.monotonic() + 2.0))
            try:
                return await drive(backend, 2.0)
            finally:
                await neighbour
                await backend.close()

        latencies, errors = asyncio.run(scenario())
        assert len(latencies) > 2000
        assert errors == Counter()
