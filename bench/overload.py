"""The overload run: a route of 20 ms of event-loop time, offered 3x what one worker serves.

One uvicorn worker (pinned like the main table's) serves ``GET /busy``, which keeps its event loop
busy for 20 ms. First its capacity is measured (requests per second with a few requests always
waiting) and its unloaded latency (one request at a time). Then an open-loop load generator offers
3x that capacity, whatever the server answers (arrivals do not wait for responses, as real clients'
do not), over up to 256 keep-alive connections (a load balancer's upstream pool: uvloop takes new
connections one per loop iteration, so a connection per request would queue them in the kernel,
out of any app's sight), each request given up after 5 seconds, like a load balancer's timeout.
Only requests due after the first 3 seconds of overload count: the load is sustained, a cap has
adapted, a queue has built up. The same load goes to the worker without a cap, with a fixed cap
and with ``auto``.
Latencies are measured from when a request was due, not when it could be sent, so a slow
generator cannot hide queueing.

For each: p50 and p99 of the served requests (200), the share shed (503), the share given up
(timeouts), and goodput: served requests that completed within the offered window, per second,
over the capacity. Goals: with a cap, p99 of served requests at most 3x the unloaded p99 and
goodput at least 90 % of capacity.

``python -m bench.overload --duration 5`` runs it alone and prints its section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from bench.runner import log
from bench.servers import LOAD_CPU, app_server
from bench.variants import BY_NAME

BUSY_MS = 20.0
OVERLOAD_FACTOR = 3.0
CLIENT_TIMEOUT = 5.0
#: The fixed cap of the run: a route that never awaits holds the loop from start to end, so one at a time;
#: the kernel's accept queue holds the next arrivals meanwhile (20 ms at most).
FIXED_CAP = "1"
CAPS = ("0", FIXED_CAP, "auto")
P99_GOAL = 3.0
GOODPUT_GOAL = 0.9
#: Keep-alive connections the generator keeps open, as a load balancer's upstream pool (nginx's keepalive).
CONNECTIONS = 256
_REQUEST = b"GET /busy HTTP/1.1\r\nHost: bench\r\n\r\n"


@dataclass(frozen=True)
class Outcome:
    """One request: its status (0: given up, -1: connection failed), latency from when it was due, when it ended."""

    status: int
    seconds: float
    ended: float


@dataclass
class OverloadRun:
    """The worker with one cap setting under 3x its capacity."""

    cap: str
    offered_rps: float
    window: float
    outcomes: list[Outcome] = field(default_factory=list)

    def _share(self, keep: set[int]) -> float:
        return sum(o.status in keep for o in self.outcomes) / len(self.outcomes) if self.outcomes else 0.0

    @property
    def served(self) -> list[float]:
        return sorted(o.seconds for o in self.outcomes if o.status == 200)

    def percentile(self, q: float) -> float:
        return _percentile(self.served, q)

    @property
    def shed_share(self) -> float:
        return self._share({503})

    @property
    def timeout_share(self) -> float:
        return self._share({0})

    @property
    def error_share(self) -> float:
        return 1.0 - self._share({0, 200, 503})

    @property
    def goodput_rps(self) -> float:
        """Served requests that completed within the offered window, per second of it."""
        return sum(1 for o in self.outcomes if o.status == 200 and o.ended <= self.window) / self.window


@dataclass
class Overload:
    """Capacity, unloaded latency and one run per cap setting."""

    capacity_rps: float = 0.0
    unloaded_p50: float = 0.0
    unloaded_p99: float = 0.0
    runs: list[OverloadRun] = field(default_factory=list)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    index = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return sorted(values)[index]


class Connections:
    """Keep-alive connections to the server, as a load balancer keeps to its upstreams (at most ``size``).

    A request takes an idle connection, or opens one while fewer than ``size`` exist, or waits for
    one: that wait counts in its latency (it is due all the same).
    """

    def __init__(self, port: int, size: int = CONNECTIONS) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.slots = asyncio.Semaphore(size)

    async def request(self) -> int:
        async with self.slots:
            if self.idle:
                reader, writer = self.idle.pop()
            else:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            try:
                writer.write(_REQUEST)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
            except BaseException:
                writer.close()  # given up or broken: a connection in an unknown state is not reused
                raise
            self.idle.append((reader, writer))
            return int(head.split()[1]) if head.startswith(b"HTTP/") else -1

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def _one(connections: Connections, due: float, origin: float, timeout: float) -> Outcome:
    loop = asyncio.get_running_loop()
    try:
        status = await asyncio.wait_for(connections.request(), timeout)
    except asyncio.TimeoutError:
        status = 0
    except (OSError, ValueError, IndexError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        status = -1
    now = loop.time()
    return Outcome(status, now - due, now - origin)


async def offer(
    port: int, rate: float, duration: float, *, settle: float = 0.0, timeout: float = CLIENT_TIMEOUT
) -> list[Outcome]:
    """Open loop: ``rate`` requests per second for ``settle + duration`` seconds, each due at its own time.

    Only the requests due after ``settle`` seconds are returned (the load is sustained: a cap has
    adapted, a queue has built up); their ``ended`` counts from the end of ``settle``.
    """
    loop = asyncio.get_running_loop()
    connections = Connections(port)
    origin = loop.time()
    tasks = []
    for index in range(int(rate * (settle + duration))):
        due = origin + index / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(_one(connections, due, origin + settle, timeout)))
    try:
        outcomes = await asyncio.gather(*tasks)
    finally:
        connections.close()
    first = int(rate * settle)
    return list(outcomes[first:])


async def closed_loop(port: int, clients: int, duration: float) -> list[Outcome]:
    """``clients`` callers, each sending its next request when the previous one is answered."""
    loop = asyncio.get_running_loop()
    origin = loop.time()
    end = origin + duration

    connections = Connections(port, clients)

    async def caller() -> list[Outcome]:
        done = []
        while loop.time() < end:
            done.append(await _one(connections, loop.time(), origin, CLIENT_TIMEOUT))
        return done

    try:
        return [o for batch in await asyncio.gather(*(caller() for _ in range(clients))) for o in batch]
    finally:
        connections.close()


@contextlib.contextmanager
def _load_cpu(pin: bool) -> Iterator[None]:
    """The generator on the load generator's CPU while it runs (the server is on CPU 0)."""
    before = os.sched_getaffinity(0)
    if pin:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {LOAD_CPU})
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, before)


def measure(redis_url: str, *, duration: float, warmup: float = 1.0, settle: float = 3.0, pin: bool = True) -> Overload:
    """Capacity and unloaded latency of ``/busy``, then 3x that capacity with no cap, a fixed cap and ``auto``."""
    result = Overload()
    variant = BY_NAME["opskit-overload"]
    for cap in CAPS:
        env = {"BENCH_BUSY_MS": f"{BUSY_MS:g}", "BENCH_MAX_IN_FLIGHT": cap, "OPSKIT_LOGGING_ENABLED": "false"}
        with app_server(variant, redis_url, env=env, pin_cpu=pin) as server, _load_cpu(pin):
            if not result.capacity_rps:
                asyncio.run(closed_loop(server.port, 1, warmup))
                alone = asyncio.run(closed_loop(server.port, 1, max(2.0, duration / 2)))
                times = sorted(o.seconds for o in alone if o.status == 200)
                result.unloaded_p50, result.unloaded_p99 = _percentile(times, 0.5), _percentile(times, 0.99)
                busy = asyncio.run(closed_loop(server.port, 4, max(2.0, duration / 2)))
                result.capacity_rps = sum(o.status == 200 for o in busy) / max(2.0, duration / 2)
                log(
                    f"overload: capacity {result.capacity_rps:.1f} req/s, unloaded p50 "
                    f"{result.unloaded_p50 * 1e3:.1f} ms, p99 {result.unloaded_p99 * 1e3:.1f} ms"
                )
            else:
                asyncio.run(closed_loop(server.port, 1, warmup))
            rate = OVERLOAD_FACTOR * result.capacity_rps
            run = OverloadRun(cap, rate, duration, asyncio.run(offer(server.port, rate, duration, settle=settle)))
            result.runs.append(run)
            log(
                f"overload cap={cap}: served p50 {run.percentile(0.5) * 1e3:.0f} ms, p99 "
                f"{run.percentile(0.99) * 1e3:.0f} ms, shed {run.shed_share:.0%}, given up {run.timeout_share:.0%}, "
                f"goodput {run.goodput_rps / result.capacity_rps:.0%} of capacity"
            )
    return result


def _cap_label(cap: str) -> str:
    return {"0": "no cap", "auto": "`auto`"}.get(cap, f"fixed, {cap}")


def verdict(result: Overload, run: OverloadRun) -> str:
    """pass/miss of the goals for a capped run; what happened without a cap."""
    if not run.outcomes or not result.capacity_rps:
        return "n/a"
    p99_factor = run.percentile(0.99) / result.unloaded_p99 if result.unloaded_p99 else 0.0
    goodput = run.goodput_rps / result.capacity_rps
    if run.cap == "0":
        return (
            f"no protection: served p99 {p99_factor:.0f}x unloaded, {run.timeout_share:.0%} given up after "
            f"{CLIENT_TIMEOUT:g} s"
        )
    misses = []
    if p99_factor > P99_GOAL:
        misses.append(f"p99 {p99_factor:.1f}x > {P99_GOAL:g}x")
    if goodput < GOODPUT_GOAL:
        misses.append(f"goodput {goodput:.0%} < {GOODPUT_GOAL:.0%}")
    return "**miss**: " + ", ".join(misses) if misses else f"**pass** (p99 {p99_factor:.1f}x, goodput {goodput:.0%})"


def section(result: Overload | None) -> list[str]:
    """The overload section of RESULTS.md."""
    if result is None or not result.runs:
        return []
    lines = [
        f"## Overload: {BUSY_MS:g} ms of event-loop time per request, offered {OVERLOAD_FACTOR:g}x capacity",
        "",
        f"One uvicorn worker (variant `opskit-overload`) serving `GET /busy`: capacity "
        f"**{result.capacity_rps:.1f} req/s** (4 callers back to back), unloaded latency p50 "
        f"{result.unloaded_p50 * 1e3:.1f} ms, p99 {result.unloaded_p99 * 1e3:.1f} ms (one at a time). An open-loop "
        f"generator then offers {OVERLOAD_FACTOR:g}x the capacity over up to {CONNECTIONS} keep-alive connections, "
        f"each request given up after {CLIENT_TIMEOUT:g} s; latency counts from when a request was due, and "
        "requests due in the first 3 s of overload are left out (sustained load). "
        f"Goals with a cap: served p99 <= {P99_GOAL:g}x the unloaded p99, goodput >= {GOODPUT_GOAL:.0%} of capacity.",
        "",
        "| cap (`OPSKIT_MAX_IN_FLIGHT`) | offered req/s | served p50 ms | served p99 ms | shed (503) | given up "
        "| other errors | goodput / capacity | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in result.runs:
        goodput = run.goodput_rps / result.capacity_rps if result.capacity_rps else 0.0
        lines.append(
            f"| {_cap_label(run.cap)} | {run.offered_rps:.0f} | {run.percentile(0.5) * 1e3:.0f} | "
            f"{run.percentile(0.99) * 1e3:.0f} | {run.shed_share:.0%} | {run.timeout_share:.0%} | "
            f"{run.error_share:.0%} | {goodput:.0%} | {verdict(result, run)} |"
        )
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of offered load per cap (default 10)")
    args = parser.parse_args(argv)
    from bench.servers import private_redis

    pin = (os.cpu_count() or 1) >= 2
    with private_redis(cpu=None) as redis:
        started = time.monotonic()
        result = measure(redis.url, duration=args.duration, pin=pin)
    print("\n".join(section(result)))
    log(f"overload run took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
