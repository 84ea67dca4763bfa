"""opskit's own Cluster routing: slot table, MOVED replies, a slot that changes master."""

from __future__ import annotations

import asyncio

import hiredis
import pytest
from redis.crc import key_slot
from redis.exceptions import MovedError

from opskit.metrics import Registry
from opskit.ratelimit import Decision, Policy
from opskit.ratelimit.cluster import ClusterRoutes, moved_to, parse_cluster_slots
from opskit.ratelimit.metrics import RateLimitMetrics
from tests.ratelimit.cluster import failing_cluster
from tests.ratelimit.conftest import redis_limiter


class TestSlotTable:
    def test_cluster_slots_reply_is_read(self) -> None:
        """Ranges come out sorted, an empty host is the asked node's."""
        reply = [[5461, 10922, [b"", 7001, b"id"]], [0, 5460, [b"10.0.0.1", 7000, b"id"], [b"10.0.0.4", 7003]]]
        assert parse_cluster_slots(reply, ("10.0.0.2", 7001)) == [
            (0, 5460, ("10.0.0.1", 7000)),
            (5461, 10922, ("10.0.0.2", 7001)),
        ]

    def test_moved_is_recognised_from_both_clients(self) -> None:
        """hiredis keeps the error code in the message, redis-py drops it; both name the new master."""
        assert moved_to(hiredis.ReplyError("MOVED 3999 127.0.0.1:6381")) == ("127.0.0.1", 6381)
        assert moved_to(MovedError("3999 127.0.0.1:6381")) == ("127.0.0.1", 6381)
        assert moved_to(hiredis.ReplyError("NOSCRIPT No matching script")) is None
        assert moved_to([1, 0, 5, 0, 0]) is None

    def test_uncovered_slot_has_no_owner(self) -> None:
        """A key whose slot no range covers has no master (its decision fails, others do not)."""

        async def no_slots(node: object) -> list[object]:
            return [[0, 99, [b"127.0.0.1", 7000]]]

        routes: ClusterRoutes[str] = ClusterRoutes([("127.0.0.1", 7000)], lambda a: f"{a[0]}:{a[1]}", no_slots)
        assert asyncio.run(routes.refresh(1.0))
        covered = next(f"k{i}" for i in range(10_000) if key_slot(f"k{i}".encode()) < 100)
        uncovered = next(f"k{i}" for i in range(10_000) if key_slot(f"k{i}".encode()) >= 100)
        assert routes.owner(covered) == ("127.0.0.1", 7000)
        assert routes.owner(uncovered) is None


@pytest.mark.slow
class TestSlotMoved:
    @pytest.mark.parametrize("pipelined", [True, False], ids=["channel", "redis-py"])
    def test_decision_follows_moved_and_the_table_catches_up(self, pipelined: bool) -> None:
        """A slot handed to another master answers MOVED; the decision follows it at once, exactly, and
        the slot table is refreshed so later decisions go straight there."""
        policy = Policy.build("moved", "1/minute burst=2")
        with failing_cluster(3) as cluster:
            key = policy.storage_key("moved:", "alice")
            slot = key_slot(key.encode())
            old = cluster.master_of(key)
            new = next(m for m in cluster.masters if m is not old)

            async def scenario() -> tuple[list[Decision], tuple[str, int] | None]:
                metrics = RateLimitMetrics(Registry(None))
                limiter = redis_limiter(cluster.url, "moved:", metrics, timeout=0.5, pipelined=pipelined)
                assert await limiter.warm_up()
                cluster.hand_over(slot, old, new)  # the slot is empty: no key to migrate
                decisions = [await limiter.hit(policy, "alice") for _ in range(3)]
                await asyncio.sleep(1.5)  # the background refresh, a second after the warm-up's
                routes = limiter.backend.target  # type: ignore[union-attr]
                assert isinstance(routes, ClusterRoutes)
                owner = routes.owner(key)
                await limiter.close()
                return decisions, owner

            decisions, owner = asyncio.run(scenario())
            assert [d.outcome for d in decisions] == ["allowed", "allowed", "limited"]
            assert owner == ("127.0.0.1", new.port)
            assert new.cli("exists", key).strip() == "1"
