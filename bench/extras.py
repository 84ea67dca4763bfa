"""The measurements beside the main table: gunicorn scaling, /metrics scrape time, limiter vs Redis."""

from __future__ import annotations

import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import wrk
from bench.processes import RedisServer
from bench.runner import Options, Status, Summary, log, tree_cpu_seconds
from bench.servers import LOAD_CPU, SERVER_CPU, app_server, private_redis, redis_benchmark_evalsha
from bench.variants import BY_NAME

SCALING_VARIANTS = ("opskit-all", "bare")
SCRAPE_VARIANTS = ("opskit-metrics", "peer-instrumentator")
SCRAPE_WORKERS = 8
SCRAPE_ROUTES = 50
SCRAPES = 30

# A token bucket as one Lua script on the server's clock: the yardstick when opskit ships no script.
# Same arguments as opskit's script: ARGV = cost, force (unused here), microseconds per token, burst.
REFERENCE_TOKEN_BUCKET = """
local cost = tonumber(ARGV[1])
local interval = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - ts) / interval)
local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * interval / 1000) + 1000)
return allowed
"""
# One token per microsecond, a huge burst: never rejects at any rate Redis can serve.
SCRIPT_ARGS = ("1", "0", "1", "1000000000")


@dataclass
class Scaling:
    """gunicorn with 1 and 2 uvicorn workers: throughput per worker count, ratio 2/1 per round."""

    variant: str
    status: Status
    rps: dict[int, list[float]] = field(default_factory=dict)
    ratios: list[float] = field(default_factory=list)
    #: CPU cores the server (gunicorn and its workers) kept busy during each measured run.
    cores: dict[int, list[float]] = field(default_factory=dict)
    #: Per round: requests per server CPU-second with 2 workers over the same with 1.
    efficiencies: list[float] = field(default_factory=list)

    def median_rps(self, workers: int) -> float:
        values = self.rps.get(workers, [])
        return statistics.median(values) if values else 0.0

    def median_cores(self, workers: int) -> float:
        values = self.cores.get(workers, [])
        return statistics.median(values) if values else 0.0

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios) if self.ratios else 0.0

    @property
    def efficiency(self) -> float:
        """How much of the second worker's CPU turned into requests: 1.0 is linear scaling per core."""
        return statistics.median(self.efficiencies) if self.efficiencies else 0.0


@dataclass
class Scrape:
    """Time to scrape /metrics from gunicorn with many workers after traffic on many routes."""

    variant: str
    status: Status
    times_ms: list[float] = field(default_factory=list)
    size_bytes: int = 0
    samples: int = 0

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms) if self.times_ms else 0.0

    @property
    def max_ms(self) -> float:
        return max(self.times_ms) if self.times_ms else 0.0


@dataclass
class LimiterCost:
    """The limiter's decisions per second through the app against Redis's raw EVALSHA rate."""

    script_source: str
    raw_evalsha_rps: float
    rows: list[Summary] = field(default_factory=list)


def gunicorn_scaling(redis: RedisServer, options: Options, statuses: dict[str, Status]) -> list[Scaling]:
    """Each variant under gunicorn with 1 then 2 workers (order alternating), ``options.rounds`` times.

    Not pinned: the two workers and wrk share the machine's cores.
    """
    results = []
    for name in (name for name in SCALING_VARIANTS if name in statuses):
        scaling = Scaling(name, statuses[name])
        results.append(scaling)
        if scaling.status.availability == "n/a":
            continue
        for round_no in range(options.rounds):
            per_round: dict[int, float] = {}
            per_cpu_second: dict[int, float] = {}
            for workers in (1, 2) if round_no % 2 == 0 else (2, 1):
                redis.cli("FLUSHALL")
                with app_server(BY_NAME[name], redis.url, workers=workers) as server:
                    url = server.url + "/items/1"
                    if options.warmup > 0:
                        wrk.run(url, duration=options.warmup, connections=options.connections, threads=options.threads)
                    cpu_before, started = tree_cpu_seconds(server.process.pid), time.monotonic()
                    result = wrk.run(
                        url, duration=options.duration, connections=options.connections, threads=options.threads
                    )
                    cpu = tree_cpu_seconds(server.process.pid) - cpu_before
                    elapsed = time.monotonic() - started
                per_round[workers] = result.rps
                per_cpu_second[workers] = result.requests / cpu if cpu > 0 else 0.0
                scaling.rps.setdefault(workers, []).append(result.rps)
                scaling.cores.setdefault(workers, []).append(cpu / elapsed if elapsed > 0 else 0.0)
                log(f"scaling {name} {workers} worker(s): {result.rps:,.0f} req/s, {cpu / elapsed:.2f} cores busy")
            scaling.ratios.append(per_round[2] / per_round[1] if per_round[1] else 0.0)
            if per_cpu_second[1]:
                scaling.efficiencies.append(per_cpu_second[2] / per_cpu_second[1])
    return results


def metrics_scrape(redis: RedisServer, options: Options, statuses: dict[str, Status]) -> list[Scrape]:
    """Traffic over 50 routes on 8 gunicorn workers, then the time of sequential /metrics scrapes."""
    results = []
    for name in (name for name in SCRAPE_VARIANTS if name in statuses):
        scrape = Scrape(name, statuses[name])
        results.append(scrape)
        if scrape.status.availability == "n/a":
            continue
        with app_server(BY_NAME[name], redis.url, workers=SCRAPE_WORKERS, extra_routes=SCRAPE_ROUTES) as server:
            wrk.run(
                server.url,
                duration=max(2.0, min(options.duration, 5.0)),
                connections=options.connections,
                threads=options.threads,
                routes=SCRAPE_ROUTES,
            )
            body = b""
            for _ in range(SCRAPES):
                start = time.perf_counter()
                status, _, body = server.get("/metrics")
                scrape.times_ms.append((time.perf_counter() - start) * 1e3)
                if status != 200:
                    raise RuntimeError(f"{name}: /metrics answered {status}")
        scrape.size_bytes = len(body)
        scrape.samples = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
        log(f"scrape {name}: median {scrape.median_ms:.1f} ms, {scrape.samples} samples")
    return results


def limiter_script(redis: RedisServer) -> tuple[str, str]:
    """opskit's token-bucket Lua script if it ships one that runs with :data:`SCRIPT_ARGS`, else the reference."""
    import opskit

    for path in sorted(Path(opskit.__file__).parent.rglob("*.lua")):
        script = path.read_text()
        try:
            reply = redis.cli("EVAL", script, "1", "bench:probe", *SCRIPT_ARGS)
        except subprocess.CalledProcessError:
            continue
        if reply.strip() and not reply.startswith("ERR"):
            return f"opskit's `{path.relative_to(Path(opskit.__file__).parent.parent)}`", script
    return "the reference token bucket of bench/extras.py (opskit ships no usable .lua script)", REFERENCE_TOKEN_BUCKET


def limiter_cost(options: Options, summaries: list[Summary]) -> LimiterCost:
    """Raw EVALSHA rate of a token-bucket script (Redis on CPU 0, redis-benchmark on CPU 1)."""
    with private_redis(cpu=SERVER_CPU if options.pin else None) as redis:
        source, script = limiter_script(redis)
        raw = redis_benchmark_evalsha(
            redis,
            script,
            SCRIPT_ARGS,
            requests=int(min(200_000, 20_000 * options.duration)),
            clients=options.connections,
            cpu=LOAD_CPU if options.pin else None,
        )
    log(f"redis-benchmark EVALSHA: {raw:,.0f}/s")
    rows = [s for s in summaries if s.variant.name in ("opskit-ratelimit", "peer-slowapi") and s.measured]
    return LimiterCost(source, raw, rows)
