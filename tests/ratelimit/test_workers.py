"""Without Redis, the workers of one `opskit serve` share their buckets: a limit means the same on any count."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import pytest

from tests.serving.processes import events, opskit_serve, wait_until

LIMIT = 100
REQUESTS = 1000
THREADS = 8


def worker_pids(base: str, workers: int) -> set[int]:
    """The pids answering on fresh connections, once every worker has booted and answered."""
    seen: set[int] = set()

    def ask() -> bool:
        seen.add(httpx.get(base + "/whoami", timeout=10).json()["pid"])
        return len(seen) == workers

    wait_until(ask, timeout=60, what=f"{workers} workers answering")
    return seen


@pytest.mark.slow
class TestWorkersShareBuckets:
    @pytest.mark.parametrize("workers", [1, 2, 4])
    def test_a_limit_admits_the_same_on_1_2_and_4_workers(self, workers: int) -> None:
        """1,000 fast requests of one API key over fresh connections, spread over every worker: a
        "100/minute" limit admits 100 (+-2, plus what refilled meanwhile) whatever the worker count."""
        env = {
            "WEB_CONCURRENCY": str(workers),
            "OPSKIT_RATE_LIMIT": f"{LIMIT}/minute",
            "OPSKIT_RATE_LIMIT_KEY": "header:X-API-Key",
            "OPSKIT_RATE_LIMIT_EXEMPT_PATHS": "/healthz,/whoami",
            "OPSKIT_LOG_LEVEL": "info",
        }
        with opskit_serve("tests.ratelimit.apps:served", env) as (process, port):
            base = f"http://127.0.0.1:{port}"
            assert len(worker_pids(base, workers)) == workers

            def send(count: int) -> list[int]:
                codes = []
                with httpx.Client(base_url=base, headers={"x-api-key": "tenant-1", "connection": "close"}) as c:
                    for _ in range(count):
                        codes.append(c.get("/items/1").status_code)
                return codes

            started = time.monotonic()
            with ThreadPoolExecutor(THREADS) as pool:
                codes = [code for batch in pool.map(send, [REQUESTS // THREADS] * THREADS) for code in batch]
            elapsed = time.monotonic() - started
            process.stop()
            logged = [e.get("event", "") for e in events(process)]
        refilled = int(elapsed * LIMIT / 60)
        assert set(codes) == {200, 429}
        assert LIMIT - 2 <= codes.count(200) <= LIMIT + 2 + refilled
        shared = any("workers share buckets" in line for line in logged)
        assert shared == (workers > 1)
