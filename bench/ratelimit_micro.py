"""Rate-limit decision throughput: ``python bench/ratelimit_micro.py [--seconds 2]``.

Starts a private redis-server and reports:

* the raw server rate of the limiter's script (``redis-benchmark`` EVALSHA, 50 clients, with and
  without pipelining): the ceiling;
* decisions/s of opskit's Redis backend from ONE event loop at several concurrencies, with the
  per-tick micro-batcher (one pipeline per tick) and without it (one call per decision);
* decisions/s of the in-memory backend;
* microseconds per request the global limit adds inside opskit's middleware (memory and Redis).

Not a test: numbers depend on the machine. The end-to-end numbers come from ``make bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.asgi_driver import http_scope
from opskit.metrics import Registry
from opskit.ratelimit import MemoryBackend, Policy, RateLimiter, RedisBackend
from opskit.ratelimit.metrics import RateLimitMetrics
from opskit.ratelimit.redis_backend import SCRIPT, SCRIPT_SHA, connect

RATE = "1000000/second"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis() -> tuple[subprocess.Popen[bytes], int, str]:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="opskit-bench-redis-")
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port, workdir
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def redis_benchmark(port: int, pipeline: int, requests: int) -> float:
    """requests/s of EVALSHA of the limiter's script, as redis-benchmark measures it."""
    subprocess.run(["redis-cli", "-p", str(port), "SCRIPT", "LOAD", SCRIPT], check=True, capture_output=True)
    argv = ["redis-benchmark", "-p", str(port), "-c", "50", "-n", str(requests), "-P", str(pipeline), "-r", "100000"]
    argv += ["-q", "EVALSHA", SCRIPT_SHA, "1", "bench:{__rand_int__}", "1", "0", "1.000", "1000000"]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    match = re.findall(r"([\d.]+) requests per second", out)
    return float(match[-1]) if match else float("nan")


async def backend_rate(url: str, concurrency: int, batch: bool, seconds: float) -> float:
    """Decisions/s from one event loop keeping ``concurrency`` decisions in flight."""
    backend = RedisBackend(connect(url, timeout=1.0, max_connections=64), timeout=1.0, batch=batch)
    limiter = RateLimiter(backend, metrics=RateLimitMetrics(Registry(None)))
    await limiter.warm_up()
    policy = Policy.build("bench", RATE)
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        nonlocal done
        key = f"client-{i}"
        while time.perf_counter() < stop:
            await limiter.hit(policy, key)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    await limiter.close()
    return done / elapsed


def memory_rate(seconds: float) -> float:
    backend = MemoryBackend()
    rates = Policy.build("bench", RATE).rates
    n = 0
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        for i in range(1000):
            backend.decide(f"client-{i}", rates)
        n += 1000
    return n / seconds


def instrumented_app(settings: dict[str, Any]) -> Any:
    """A FastAPI app under opskit (logging, metrics and tracing off), plus ``settings``."""
    from fastapi import FastAPI

    import opskit

    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    opskit.instrument(app, logging_enabled=False, metrics_enabled=False, tracing_enabled=False, **settings)
    return app


async def drive(app: Any, n: int) -> float:
    """Microseconds per request of ``n`` sequential requests straight into the ASGI app."""
    scope = http_scope(client=("10.0.0.1", 1234))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    started = time.perf_counter()
    for _ in range(n):
        await app(dict(scope), receive, send)
    return (time.perf_counter() - started) / n * 1e6


def middleware_costs(variants: dict[str, dict[str, Any]], n: int = 2000, rounds: int = 5) -> dict[str, float]:
    """Best-of-``rounds`` microseconds per request of each variant, rounds interleaved (noise hits all)."""

    async def run() -> dict[str, float]:
        apps = {name: instrumented_app(settings) for name, settings in variants.items()}
        best = {name: float("inf") for name in apps}
        for app in apps.values():
            await drive(app, 200)  # warm up (and connect)
        for _ in range(rounds):
            for name, app in apps.items():
                best[name] = min(best[name], await drive(app, n))
        return best

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each throughput run")
    args = parser.parse_args()
    if shutil.which("redis-server") is None or shutil.which("redis-benchmark") is None:
        sys.exit("redis-server and redis-benchmark are needed (scripts/install-tools)")
    proc, port, workdir = start_redis()
    url = f"redis://127.0.0.1:{port}/0"
    try:
        print(f"# rate-limit decisions/s (python {sys.version.split()[0]}, {os.cpu_count()} CPUs)\n")
        print("| measurement | decisions/s |\n|---|---:|")
        for pipeline in (1, 16):
            rate = redis_benchmark(port, pipeline, 200_000)
            print(f"| redis-benchmark EVALSHA, 50 clients, pipeline {pipeline} | {rate:,.0f} |")
        for concurrency in (1, 16, 64, 256):
            for batch in (False, True):
                rate = asyncio.run(backend_rate(url, concurrency, batch, args.seconds))
                label = "batched per tick" if batch else "one call per decision"
                print(f"| opskit Redis backend, 1 event loop, {concurrency} in flight, {label} | {rate:,.0f} |")
        print(f"| opskit in-memory backend | {memory_rate(args.seconds):,.0f} |")
        print("\n| middleware, per request (best of 5 interleaved rounds) | µs |\n|---|---:|")
        costs = middleware_costs(
            {
                "opskit, rate limiting off": {"ratelimit_enabled": False},
                "+ global limit, in memory": {"rate_limit": RATE},
                "+ global limit, Redis (sequential: one round trip each)": {
                    "rate_limit": RATE,
                    "redis_url": url,
                    "redis_timeout": 1.0,
                },
            }
        )
        base = costs["opskit, rate limiting off"]
        for name, cost in costs.items():
            print(f"| {name} | {cost:.1f}" + (f" ({cost - base:+.1f})" if cost != base else "") + " |")
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
