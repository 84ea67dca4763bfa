"""One worker of the exactness test: hammer one key through a Redis limiter, print what it saw.

Run as ``python -m tests.ratelimit.hammer URL PREFIX RATE SECONDS START_AT [LOCAL_SHARE]``; prints one
JSON line with the admitted count and the wall-clock times of the first request sent and the last
answer. ``LOCAL_SHARE`` (a fraction of the burst) puts a :class:`LocalShareBackend` in front of Redis.
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

from opskit.metrics import Registry
from opskit.ratelimit import Policy, RateLimiter
from opskit.ratelimit.local_share import LocalShareBackend
from opskit.ratelimit.metrics import RateLimitMetrics
from opskit.ratelimit.redis_backend import redis_backend

CONCURRENCY = 5


async def main(url: str, prefix: str, rate: str, seconds: float, start_at: float, share: float) -> dict[str, float]:
    remote = redis_backend(url, timeout=1.0, max_connections=4)
    backend = LocalShareBackend(remote, share) if share else remote
    limiter = RateLimiter(backend, prefix=prefix, metrics=RateLimitMetrics(Registry(None)))
    await limiter.warm_up()
    policy = Policy.build("exact", rate)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    first = time.time()
    stop = first + seconds
    counts = {"admitted": 0, "total": 0, "errors": 0}

    async def worker() -> None:
        while time.time() < stop:
            decision = await limiter.hit(policy, "the-one-key")
            counts["total"] += 1
            counts["admitted"] += decision.outcome == "allowed"
            counts["errors"] += decision.outcome.startswith("error")
            await asyncio.sleep(0.005)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    last = time.time()
    await limiter.close()
    return {**counts, "first": first, "last": last}


if __name__ == "__main__":
    url, prefix, rate, seconds, start_at = sys.argv[1:6]
    share = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    result = asyncio.run(main(url, prefix, rate, float(seconds), float(start_at), share))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
