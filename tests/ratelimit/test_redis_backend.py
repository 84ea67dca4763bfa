"""The Redis backend against real servers: keys, expiry, script reloads, batching, Cluster placement."""

from __future__ import annotations

import asyncio
import time

from opskit.metrics import Registry
from opskit.ratelimit import Decision, Policy
from opskit.ratelimit.metrics import RateLimitMetrics
from opskit.ratelimit.redis_backend import SCRIPT_SHA
from tests.ratelimit.conftest import redis_limiter, sample
from tests.servers import RedisClusterServers, RedisSentinelServer, RedisServer, TlsRedisServer


def keys(server: RedisServer, prefix: str) -> list[str]:
    return [k for k in server.cli("--scan", "--pattern", prefix + "*").splitlines() if k]


class TestKeys:
    def test_key_is_prefix_policy_and_hash_of_client(self, redis: RedisServer, metrics: RateLimitMetrics) -> None:
        """One key per (policy, client): prefix + policy + {hash}; the client key itself is never stored."""
        policy = Policy.build("login", "5/second")

        async def scenario() -> None:
            limiter = redis_limiter(redis.url, "rl:", metrics)
            for client in ("api-key-SECRET-1", "api-key-SECRET-1", "api-key-SECRET-2"):
                await limiter.hit(policy, client)
            await limiter.close()

        asyncio.run(scenario())
        found = keys(redis, "rl:")
        assert len(found) == 2
        for key in found:
            assert key.startswith("rl:login:{") and key.endswith("}")
            assert "SECRET" not in key
        assert "SECRET" not in redis.cli("--scan")

    def test_ttl_is_the_time_to_refill_and_keys_vanish(self, redis: RedisServer, metrics: RateLimitMetrics) -> None:
        """A key lives no longer than its bucket takes to fill up again; after the load stops, none is left."""
        policy = Policy.build("short", "10/second burst=5")

        async def scenario() -> None:
            limiter = redis_limiter(redis.url, "rl:", metrics)
            await asyncio.gather(*(limiter.hit(policy, f"client-{i % 20}") for i in range(100)))
            await limiter.close()

        asyncio.run(scenario())
        found = keys(redis, "rl:")
        assert len(found) == 20
        ttls = [int(redis.cli("pttl", key)) for key in found]
        # burst 5 at 10/s refills within 0.5 s; -2: the key expired already (a loaded machine reads slowly)
        assert all(ttl == -2 or 0 < ttl <= 500 for ttl in ttls)
        time.sleep(0.7)
        assert keys(redis, "rl:") == []


class TestScriptCache:
    def test_script_flush_is_survived(self, redis: RedisServer, metrics: RateLimitMetrics) -> None:
        """After SCRIPT FLUSH the next decisions, single and batched, reload the script and work."""
        policy = Policy.build("flush", "1/minute burst=3")

        async def scenario() -> list[Decision]:
            limiter = redis_limiter(redis.url, "rl:", metrics)
            first = await limiter.hit(policy, "alice")
            redis.cli("script", "flush")
            single = await limiter.hit(policy, "alice")
            redis.cli("script", "flush")
            batch = await asyncio.gather(*(limiter.hit(policy, "alice") for _ in range(3)))
            await limiter.close()
            return [first, single, *batch]

        assert [d.outcome for d in asyncio.run(scenario())] == ["allowed"] * 3 + ["limited"] * 2

    def test_restart_is_survived(self, redis: RedisServer, metrics: RateLimitMetrics) -> None:
        """After a Redis restart (empty script cache, dropped connections) the next decision works."""
        policy = Policy.build("restart", "1/minute burst=3")

        async def scenario() -> list[Decision]:
            limiter = redis_limiter(redis.url, "rl:", metrics)
            first = await limiter.hit(policy, "alice")
            redis.restart()
            after = [await limiter.hit(policy, "alice") for _ in range(4)]
            await limiter.close()
            return [first, *after]

        assert [d.outcome for d in asyncio.run(scenario())] == ["allowed"] * 4 + ["limited"]


class TestColdStart:
    def test_first_decision_warms_up_in_the_background(self, redis: RedisServer) -> None:
        """Without a startup warm-up, a first decision cut short by the timeout still gets the connection
        made and the script loaded, in the background, with a longer budget."""
        policy = Policy.build("cold", "1000/second")

        async def scenario() -> str:
            limiter = redis_limiter(redis.url, "cold:", RateLimitMetrics(Registry(None)), timeout=0.0001)
            decision = await limiter.hit(policy, "alice")
            # Polled rather than slept: a loaded machine may take longer than usual to connect.
            for _ in range(100):
                if (await asyncio.to_thread(redis.cli, "script", "exists", SCRIPT_SHA)).split() == ["1"]:
                    break
                await asyncio.sleep(0.05)
            await limiter.close()
            return decision.outcome

        assert asyncio.run(scenario()) == "error_allowed"
        assert redis.cli("script", "exists", SCRIPT_SHA).split() == ["1"]


class TestBatching:
    def test_concurrent_decisions_share_one_round_trip(self, redis: RedisServer) -> None:
        """50 decisions issued in one event-loop tick travel in one pipeline; unbatched they take 50 trips."""
        policy = Policy.build("batch", "1000/second")

        def trips(batch: bool) -> float:
            registry = Registry(None)
            metrics = RateLimitMetrics(registry)

            async def scenario() -> None:
                limiter = redis_limiter(redis.url, f"rl:{batch}:", metrics, batch=batch)
                await limiter.warm_up()
                results = await asyncio.gather(*(limiter.hit(policy, f"c{i}") for i in range(50)))
                assert all(d.outcome == "allowed" for d in results)
                await limiter.close()

            asyncio.run(scenario())
            return sample(registry, "opskit_ratelimit_backend_duration_seconds_count")

        assert trips(batch=True) == 1
        assert trips(batch=False) == 50

    def test_mixed_policies_costs_and_forced_spends_in_one_batch(self, redis: RedisServer) -> None:
        """Decisions of different policies, costs and forced spends sent in one tick each get their own
        script arguments: every bucket is charged as if it had been decided alone."""
        small, large = Policy.build("small", "2/minute"), Policy.build("large", "100/minute")

        async def scenario() -> list[tuple[str, int]]:
            limiter = redis_limiter(redis.url, "mix:", RateLimitMetrics(Registry(None)))
            await limiter.warm_up()
            decisions = await asyncio.gather(
                limiter.hit(small, "a"),
                limiter.hit(large, "a", cost=10),
                limiter.hit(small, "b", cost=2),
                limiter.hit(small, "c", cost=3, force=True),
                limiter.hit(large, "b"),
            )
            await limiter.close()
            return [(d.outcome, d.remaining) for d in decisions]

        assert asyncio.run(scenario()) == [
            ("allowed", 1),
            ("allowed", 90),
            ("allowed", 0),
            ("limited", 0),
            ("allowed", 99),
        ]

    def test_cancelled_leader_does_not_strand_the_batch(self, redis: RedisServer) -> None:
        """If the request that would send a tick's batch is cancelled, the others are still decided."""
        policy = Policy.build("leader", "1000/second")

        async def scenario() -> list[Decision]:
            limiter = redis_limiter(redis.url, "rl:", RateLimitMetrics(Registry(None)))
            await limiter.warm_up()
            leader = asyncio.create_task(limiter.hit(policy, "leader"))
            others = [asyncio.create_task(limiter.hit(policy, f"c{i}")) for i in range(5)]
            await asyncio.sleep(0)  # every task has queued its decision; the leader waits for its turn
            leader.cancel()
            decisions = await asyncio.gather(*others)
            await limiter.close()
            return decisions

        assert [d.outcome for d in asyncio.run(scenario())] == ["allowed"] * 5

    def test_leader_cancelled_mid_flight_does_not_trip_the_breaker(self, redis: RedisServer) -> None:
        """A batch cut short because its carrier was cancelled fails open for the others, but is no Redis
        failure: the circuit breaker stays closed."""
        policy = Policy.build("mid-flight", "1000/second")
        registry = Registry(None)

        async def scenario() -> tuple[list[Decision], bool]:
            limiter = redis_limiter(redis.url, "rl:", RateLimitMetrics(registry), timeout=2.0)
            await limiter.warm_up()
            redis.freeze()  # the batch stays in flight
            try:
                leader = asyncio.create_task(limiter.hit(policy, "leader"))
                others = [asyncio.create_task(limiter.hit(policy, f"c{i}")) for i in range(3)]
                await asyncio.sleep(0.1)
                leader.cancel()
                decisions = await asyncio.gather(*others)
            finally:
                redis.thaw()
            closed = limiter.breaker.closed and limiter.breaker._failures == 0
            await limiter.close()
            return decisions, closed

        decisions, closed = asyncio.run(scenario())
        assert [d.outcome for d in decisions] == ["error_allowed"] * 3
        assert closed
        assert sample(registry, "opskit_ratelimit_backend_errors_total", reason="cancelled") == 3


class TestCluster:
    def test_clients_spread_over_masters_one_slot_each(self, cluster: RedisClusterServers) -> None:
        """In a 3-master Cluster each decision's key lives on one master, and clients spread over all of them."""
        policy = Policy.build("spread", "5/second")
        metrics = RateLimitMetrics(Registry(None))

        async def scenario() -> None:
            limiter = redis_limiter(cluster.url, "spread:", metrics)
            await limiter.warm_up()
            await asyncio.gather(*(limiter.hit(policy, f"client-{i}") for i in range(60)))
            await limiter.close()

        asyncio.run(scenario())
        per_node = [
            len([k for k in node.cli("--scan", "--pattern", "spread:*").splitlines() if k]) for node in cluster.nodes
        ]
        assert sum(per_node) == 60
        assert all(count > 0 for count in per_node)


class TestDeployments:
    def test_tls(self) -> None:
        """rediss:// with the server's CA: decisions work over TLS."""
        server = TlsRedisServer()
        try:
            assert limited_after_burst(server.url) == ["allowed", "allowed", "limited"]
        finally:
            server.close()

    def test_sentinel(self, redis: RedisServer) -> None:
        """redis+sentinel://host:port/mymaster asks the Sentinel for the master and decides there."""
        sentinel = RedisSentinelServer(redis)
        try:
            assert limited_after_burst(sentinel.url) == ["allowed", "allowed", "limited"]
            assert len(keys(redis, "deploy:")) == 1
        finally:
            sentinel.close()


def limited_after_burst(url: str) -> list[str]:
    policy = Policy.build("deploy", "1/minute burst=2")

    async def scenario() -> list[str]:
        limiter = redis_limiter(url, "deploy:", RateLimitMetrics(Registry(None)), timeout=1.0)
        decisions = [await limiter.hit(policy, "alice") for _ in range(3)]
        await limiter.close()
        return [d.outcome for d in decisions]

    return asyncio.run(scenario())
