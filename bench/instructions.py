"""Instructions per request: a deterministic cost measure next to the wall-clock rounds.

On a shared machine req/s and even CPU time per request move by ±10 % between runs, which
hides differences of a few microseconds. Counting the CPU instructions the server executes
(valgrind's ``cachegrind``, no cache simulation) does not move: each variant's server runs
twice, serving ``base`` then ``base + extra`` requests after the same warm-up, and the
difference divided by ``extra`` is the instructions one request costs, server and app
included. The ratio bare ÷ variant estimates the throughput ratio a quiet machine would show,
leaving out only cache and branch-prediction effects.

Work a server does per second rather than per request (the runtime-health lag probe and its
watchdog, the in-progress gauge's updates, the OTLP exports of metrics, log records and spans)
would be counted many times over: under valgrind a request takes tens of times longer, so a
timer fires tens of times more often per request. The slowdown is measured (bare served natively,
then under valgrind, the same requests over the same connections), and every time-based setting
of the counted servers is stretched by it, so a timer costs each request the share it costs on a
real machine. (The overload feature's 0.25 s saturation sample is a constant, not a setting: it
is not stretched.)

``python -m bench.instructions [--variants a,b] [--requests N]`` prints the table alone.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.processes import RedisServer, which
from bench.servers import AppServer, Unavailable, app_server, private_redis
from bench.variants import BY_NAME, Variant, select

__all__ = ["InstructionCount", "count", "dilated_settings", "measure_all", "slowdown"]

CONNECTIONS = 64
WARMUP_REQUESTS = 256
BASE_REQUESTS = 256
_REQUEST = b"GET /items/1 HTTP/1.1\r\nHost: bench\r\n\r\n"
_IREFS = re.compile(r"I\s+refs:\s+([\d,]+)")
# Settings that are periods of time: the settings field, the value the bench's servers run with
# (the default, or what bench.servers sets) and the largest value each accepts. Milliseconds are
# whole numbers. The OTLP export periods count too: a metric export every second of wall-clock
# time is tens of exports per second of a real machine's serving under valgrind.
_TIME_SETTINGS: dict[str, tuple[str, float, float]] = {
    "OPSKIT_RUNTIME_LAG_INTERVAL": ("runtime_lag_interval", 0.05, 10.0),
    "OPSKIT_RUNTIME_BLOCKED_THRESHOLD": ("runtime_blocked_threshold", 0.1, 600.0),
    "OPSKIT_METRICS_IN_PROGRESS_INTERVAL": ("metrics_in_progress_interval", 1.0, 60.0),
    "OTEL_METRIC_EXPORT_INTERVAL": ("metric_export_interval_ms", 1000, 86_400_000),
    "OTEL_BLRP_SCHEDULE_DELAY": ("blrp_schedule_delay_ms", 1000, 600_000),
    "OTEL_BSP_SCHEDULE_DELAY": ("bsp_schedule_delay_ms", 5000, 600_000),
}


@dataclass(frozen=True)
class InstructionCount:
    """A variant's instructions per request (``None`` with a reason when it could not be measured)."""

    variant: str
    per_request: float | None
    reason: str = ""
    env: dict[str, str] = field(default_factory=dict)


async def _load(port: int, requests: int, connections: int = CONNECTIONS) -> None:
    """``requests`` keep-alive GETs spread over ``connections``, each connection one at a time."""

    async def one_connection(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(n):
                writer.write(_REQUEST)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"unexpected response: {head[:40]!r}")
                await reader.readexactly(length)
        finally:
            writer.close()

    share, rest = divmod(requests, connections)
    await asyncio.gather(*(one_connection(share + (i < rest)) for i in range(connections)))


def dilated_settings(factor: float) -> dict[str, str]:
    """The time-based settings stretched by ``factor`` (valgrind's slowdown), within their bounds."""
    stretched = {}
    for name, (_, default, top) in _TIME_SETTINGS.items():
        value = min(default * factor, top)
        stretched[name] = str(round(value)) if isinstance(default, int) else f"{value:.6g}"
    return stretched


def _timed_load(port: int, requests: int) -> float:
    start = time.perf_counter()
    asyncio.run(_load(port, requests))
    return time.perf_counter() - start


def slowdown(redis: RedisServer, requests: int) -> float:
    """How many times longer bare takes to serve ``requests`` under valgrind than natively."""
    bare = BY_NAME["bare"]
    with app_server(bare, redis.url) as server:
        asyncio.run(_load(server.port, WARMUP_REQUESTS))
        native = min(_timed_load(server.port, requests) for _ in range(3))
    elapsed: list[float] = []
    _total_instructions(bare, redis, requests, elapsed=elapsed)
    return max(elapsed[0] / native, 1.0)


def _total_instructions(
    variant: Variant,
    redis: RedisServer,
    requests: int,
    env: dict[str, str] | None = None,
    elapsed: list[float] | None = None,
) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-valgrind-") as work:
        log = Path(work) / "valgrind.log"
        wrapper = [
            which("valgrind"),
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            f"--log-file={log}",
        ]
        redis.cli("FLUSHALL")
        server: AppServer
        # A fixed hash seed: set and dict layouts, and so the instruction counts, repeat exactly.
        full_env = {**(env or {}), "PYTHONHASHSEED": "0"}
        with app_server(variant, redis.url, wrapper=wrapper, env=full_env, startup_timeout=300) as server:
            asyncio.run(_load(server.port, WARMUP_REQUESTS))
            if requests:
                took = _timed_load(server.port, requests)
                if elapsed is not None:
                    elapsed.append(took)
            # SIGINT lets uvicorn shut down cleanly, so valgrind prints its summary.
            server.process.stop(signal.SIGINT, timeout=120)
        found = _IREFS.search(log.read_text()) if log.exists() else None
        if found is None:
            raise RuntimeError(f"valgrind printed no instruction count for {variant.name}")
        return int(found.group(1).replace(",", ""))


def count(variant: Variant, redis: RedisServer, extra: int, env: dict[str, str] | None = None) -> InstructionCount:
    """Instructions per request of ``variant``, from ``extra`` requests more in a second run."""
    try:
        low = _total_instructions(variant, redis, BASE_REQUESTS, env)
        high = _total_instructions(variant, redis, BASE_REQUESTS + extra, env)
    except (Unavailable, RuntimeError, OSError, TimeoutError) as exc:
        return InstructionCount(variant.name, None, f"{type(exc).__name__}: {exc}", env or {})
    return InstructionCount(variant.name, (high - low) / extra, env=env or {})


def measure_all(
    variants: list[Variant], redis: RedisServer, extra: int, log: Callable[[str], None] | None = None
) -> list[InstructionCount]:
    """Every variant's count, in order (bare first, so ratios can be taken), time-based settings
    stretched by valgrind's measured slowdown."""
    try:
        factor = slowdown(redis, BASE_REQUESTS + extra)
    except (Unavailable, RuntimeError, OSError, TimeoutError) as exc:
        if log is not None:
            log(f"instructions: valgrind's slowdown not measured ({exc}); time-based settings left as they are")
        factor = 1.0
    env = dilated_settings(factor)
    if log is not None:
        log(f"instructions: valgrind's slowdown {factor:.0f}x; " + ", ".join(f"{k}={v}" for k, v in env.items()))
    results = []
    for variant in variants:
        if log is not None:
            log(f"instructions: {variant.name}")
        results.append(count(variant, redis, extra, env))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="", help=f"comma-separated subset; known: {', '.join(BY_NAME)}")
    parser.add_argument("--requests", type=int, default=1024, help="extra requests of the second run (default 1024)")
    args = parser.parse_args(argv)
    variants = select([name for name in args.variants.split(",") if name] or None)
    with private_redis(cpu=None) as redis:
        results = measure_all(variants, redis, args.requests, log=lambda text: print(text, file=sys.stderr))
    bare = results[0].per_request
    for result in results:
        if result.per_request is None:
            print(f"{result.variant:24} n/a  {result.reason}")
            continue
        ratio = f"{bare / result.per_request:.3f}" if bare else "-"
        print(f"{result.variant:24} {result.per_request:12,.0f} instr/req  ratio {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
