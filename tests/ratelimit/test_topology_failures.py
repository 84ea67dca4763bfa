"""Failures of one part of a Redis deployment: a dead Cluster master, a Sentinel failover.

A dead master fails only the keys of its slots; the keys of the healthy masters keep exact limits,
no decision outlives the timeout, and the event loop is never blocked while it happens.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from opskit.metrics import Registry
from opskit.ratelimit import Decision, Policy, RateLimiter
from opskit.ratelimit.metrics import RateLimitMetrics
from tests.ratelimit.cluster import FailingCluster, LoopLag, failing_cluster, sentinel_group
from tests.ratelimit.conftest import redis_limiter

TIMEOUT = 0.05
SLACK = 0.05  # scheduling on a shared 2-core machine
BURST = 5


def clients_by_master(cluster: FailingCluster, limiter: RateLimiter, policy: Policy, each: int) -> dict[int, list[str]]:
    """``each`` client keys per master port, found by where their storage key's slot lives."""
    found: dict[int, list[str]] = {m.port: [] for m in cluster.masters}
    i = 0
    while any(len(keys) < each for keys in found.values()):
        client = f"client-{i}"
        port = cluster.master_of(policy.storage_key(limiter.prefix, client)).port
        if len(found[port]) < each:
            found[port].append(client)
        i += 1
    return found


async def timed_hit(limiter: RateLimiter, policy: Policy, client: str) -> tuple[Decision, float]:
    started = time.perf_counter()
    decision = await limiter.hit(policy, client)
    return decision, time.perf_counter() - started


@pytest.fixture
def doomed_cluster() -> Iterator[FailingCluster]:
    """A 3-master Cluster of its own: the test kills one of its masters."""
    with failing_cluster(3) as servers:
        yield servers


@pytest.mark.slow
class TestClusterMasterKilled:
    @pytest.mark.parametrize(
        ("on_error", "pipelined", "expected"),
        [("allow", True, "error_allowed"), ("reject", False, "error_rejected")],
        ids=["allow-channel", "reject-redis-py"],
    )
    def test_only_the_dead_masters_keys_fail(
        self, doomed_cluster: FailingCluster, on_error: str, pipelined: bool, expected: str
    ) -> None:
        """SIGKILL one of 3 masters: keys on the other two keep exact limits, keys on the dead one follow
        on_error, every decision returns within the timeout, and the loop is never blocked for 30 ms."""
        cluster = doomed_cluster
        policy = Policy.build("cluster", f"1/minute burst={BURST}")
        rounds = 25
        gc.freeze()  # the test process's own full collections are not what this measures

        async def scenario() -> tuple[dict[str, list[tuple[Decision, float]]], dict[int, list[str]], LoopLag]:
            limiter = redis_limiter(
                cluster.url, "kill:", RateLimitMetrics(Registry(None)), timeout=TIMEOUT, on_error=on_error,
                pipelined=pipelined,
            )  # fmt: skip
            assert await limiter.warm_up()
            clients = clients_by_master(cluster, limiter, policy, each=4)
            victim = cluster.masters[1]
            victim.kill()
            probe = LoopLag()
            probe.start()
            seen: dict[str, list[tuple[Decision, float]]] = {c: [] for keys in clients.values() for c in keys}
            for _ in range(rounds):
                results = await asyncio.gather(*(timed_hit(limiter, policy, c) for c in seen))
                for client, result in zip(seen, results, strict=True):
                    seen[client].append(result)
                await asyncio.sleep(0.05)
            await probe.stop()
            await limiter.close()
            return seen, clients, probe

        seen, clients, probe = asyncio.run(scenario())
        dead = set(clients[cluster.masters[1].port])
        for client, results in seen.items():
            outcomes = [d.outcome for d, _ in results]
            if client in dead:
                assert set(outcomes) == {expected}, (client, Counter(outcomes))
            else:
                assert outcomes == ["allowed"] * BURST + ["limited"] * (rounds - BURST), (client, Counter(outcomes))
        slowest = max(elapsed for results in seen.values() for _, elapsed in results)
        assert slowest < TIMEOUT + SLACK
        assert probe.cpu < 0.030, f"the event loop was blocked for {probe.cpu * 1000:.0f} ms"


@pytest.mark.slow
class TestSentinelFailover:
    def test_exact_then_fail_open_then_exact_on_the_promoted_replica(self) -> None:
        """Through the Sentinel limits are exact; with the master killed decisions fail open within the
        timeout, none raises; once the Sentinel promotes the replica, limits are exact there."""
        first = Policy.build("before", "1/minute burst=3")
        after = Policy.build("after", "1/minute burst=3")
        gc.freeze()

        with sentinel_group() as group:
            old_port = group.master.port

            async def scenario() -> tuple[list[str], list[tuple[Decision, float]], list[str], float]:
                metrics = RateLimitMetrics(Registry(None))
                limiter = redis_limiter(group.url, "failover:", metrics, timeout=TIMEOUT)
                assert await limiter.warm_up()
                exact: list[str] = [(await limiter.hit(first, "alice")).outcome for _ in range(4)]
                assert group.master.process is not None
                group.master.process.stop(signal.SIGKILL)
                killed = time.monotonic()
                during: list[tuple[Decision, float]] = []
                promoted = 0.0
                while time.monotonic() - killed < 20:
                    decision, elapsed = await timed_hit(limiter, first, "bob")
                    during.append((decision, elapsed))
                    if decision.outcome in ("allowed", "limited"):
                        promoted = time.monotonic() - killed
                        break
                    await asyncio.sleep(0.05)
                recovered: list[str] = [(await limiter.hit(after, "carol")).outcome for _ in range(4)]
                await limiter.close()
                return exact, during, recovered, promoted

            exact, during, recovered, promoted = asyncio.run(scenario())
            assert group.master_port() != old_port  # the Sentinel promoted the replica
        assert exact == ["allowed"] * 3 + ["limited"]
        assert promoted > 0, "decisions never came back from Redis"
        failed = [d.outcome for d, _ in during[:-1]]
        assert failed and set(failed) == {"error_allowed"}
        assert max(elapsed for _, elapsed in during) < TIMEOUT + SLACK
        assert recovered == ["allowed"] * 3 + ["limited"]
