"""Exactness across processes: 2 pods x 2 workers share one Redis and one key."""

from __future__ import annotations

import sys
import time

import orjson
import pytest

from tests.servers import ROOT, Background, RedisServer

RATE = 100
BURST = 20
SECONDS = 5.0


@pytest.mark.slow
class TestAcrossProcesses:
    def test_four_processes_admit_what_one_bucket_allows(self, redis: RedisServer) -> None:
        """4 OS processes hammering one key admit within [0.98, 1.0] x (burst + rate x elapsed) + 1."""
        start_at = time.time() + 2.0  # let every process import and connect first
        argv = [sys.executable, "-m", "tests.ratelimit.hammer", redis.url, "exact:", f"{RATE}/second burst={BURST}"]
        workers = [Background([*argv, str(SECONDS), str(start_at)], cwd=ROOT) for _ in range(4)]
        try:
            for worker in workers:
                assert worker.wait(SECONDS + 30) == 0, worker.stderr()
            results = [orjson.loads(worker.stdout().strip().splitlines()[-1]) for worker in workers]
        finally:
            for worker in workers:
                worker.close()
        assert sum(r["errors"] for r in results) == 0
        admitted = sum(r["admitted"] for r in results)
        elapsed = max(r["last"] for r in results) - min(r["first"] for r in results)
        allowed = BURST + RATE * elapsed
        assert 0.98 * allowed <= admitted <= allowed + 1
        assert all(r["admitted"] > 0 for r in results)  # every worker got its share
        assert sum(r["total"] for r in results) > 3 * admitted  # the key was really under pressure
