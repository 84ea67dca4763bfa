"""The main measurement: check each variant really does its job, then interleaved rounds under wrk."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Literal

from bench import wrk
from bench.servers import LOAD_CPU, SERVER_CPU, AppServer, RedisCalls, Unavailable, app_server, cpu_jiffies, redis_calls
from bench.variants import Variant
from tests.servers import RedisServer

PROBE_REQUESTS = 20
Availability = Literal["ok", "partial", "n/a", "error"]


@dataclass(frozen=True)
class Options:
    """How the main table is measured."""

    duration: float = 10.0
    warmup: float = 2.0
    rounds: int = 5
    connections: int = 64
    threads: int = 1
    pin: bool = True


@dataclass(frozen=True)
class Status:
    """Whether a variant could be built and showed every sign of its features working."""

    availability: Availability
    reason: str = ""


@dataclass(frozen=True)
class Measurement:
    """One wrk run of one variant in one round."""

    variant: str
    round: int
    result: wrk.WrkResult
    redis: RedisCalls
    server_cpu_s: float = 0.0
    other_cpu_share: float = 0.0

    @property
    def cpu_us_per_request(self) -> float:
        """Server CPU time per request: unlike req/s, it barely moves when other work steals the core."""
        return self.server_cpu_s * 1e6 / self.result.requests if self.result.requests else 0.0


@dataclass
class Summary:
    """A variant's row: medians over the rounds."""

    variant: Variant
    status: Status
    measurements: list[Measurement] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    rps: float = 0.0
    ratio: float = 0.0
    p50_us: float = 0.0
    p99_us: float = 0.0
    added_us: float = 0.0
    errors: int = 0
    redis_per_request: float = 0.0
    scripts_per_request: float = 0.0
    cpu_us: float = 0.0
    cpu_ratio: float = 0.0

    @property
    def measured(self) -> bool:
        return bool(self.measurements)


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _missing_evidence(variant: Variant, server: AppServer, redis: RedisServer, redis_before: RedisCalls) -> list[str]:
    """Probe a running server; stop it; list the features that left no trace."""
    missing: list[str] = []
    last_headers: dict[str, str] = {}
    for index in range(PROBE_REQUESTS):
        status, last_headers, body = server.get(f"/items/{index}")
        if status != 200:
            raise RuntimeError(f"{variant.name}: GET /items/{index} answered {status}: {body[:200]!r}")
    if "metrics" in variant.evidence:
        status, _, body = server.get("/metrics")
        if status != 200 or b"http_request" not in body:
            missing.append("metrics (no /metrics with http_request* series)")
    server.stop()
    if "request_id" in variant.evidence and "x-request-id" not in last_headers:
        missing.append("request ID (no X-Request-ID response header)")
    if "access_log" in variant.evidence and "/items/1" not in server.process.stdout():
        missing.append("access log (no line about /items/1 on stdout)")
    if "spans" in variant.evidence and not server.span_marker.exists():
        missing.append("tracing (no span reached the exporter)")
    if "redis" in variant.evidence and (redis_calls(redis) - redis_before).scripts < PROBE_REQUESTS:
        missing.append("rate limiter (fewer Redis script calls than requests)")
    return missing


def check(variant: Variant, redis: RedisServer) -> Status:
    """Start ``variant``, send a few requests, and look for the evidence of each of its features.

    An opskit variant that cannot be built or leaves no trace of a feature is "n/a" (not built yet);
    a bare or peer variant in that state is an "error" of the harness, reported, not measured.
    """
    before = redis_calls(redis)
    try:
        with app_server(variant, redis.url) as server:
            missing = _missing_evidence(variant, server, redis, before)
    except Unavailable as exc:
        if variant.family != "opskit":
            return Status("error", f"did not start: {exc}")
        return Status("n/a", f"not built yet: {exc}")
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return Status("error", f"{type(exc).__name__}: {exc}")
    if not missing:
        return Status("ok")
    if variant.family != "opskit":
        return Status("error", "misconfigured, missing: " + "; ".join(missing))
    if variant.name == "opskit-all":
        return Status("partial", "measured without: " + "; ".join(missing))
    return Status("n/a", "not built yet: " + "; ".join(missing))


def measure(variant: Variant, redis: RedisServer, options: Options, round_no: int) -> Measurement:
    """Fresh server, warm-up, then one measured wrk run pinned to the load CPU."""
    redis.cli("FLUSHALL")
    cpu = LOAD_CPU if options.pin else None
    with app_server(variant, redis.url, pin_cpu=options.pin) as server:
        url = server.url + "/items/1"
        if options.warmup > 0:
            wrk.run(url, duration=options.warmup, connections=options.connections, threads=options.threads, cpu=cpu)
        before = redis_calls(redis)
        cpu_before, cpu0_before = server.cpu_seconds(), cpu_jiffies(SERVER_CPU)
        result = wrk.run(
            url, duration=options.duration, connections=options.connections, threads=options.threads, cpu=cpu
        )
        cpu_after, cpu0_after = server.cpu_seconds(), cpu_jiffies(SERVER_CPU)
        commands = redis_calls(redis) - before
    server_cpu = cpu_after - cpu_before
    busy, total = cpu0_after[0] - cpu0_before[0], cpu0_after[1] - cpu0_before[1]
    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    others = max(0.0, (busy * tick - server_cpu) / (total * tick)) if total else 0.0
    return Measurement(variant.name, round_no, result, commands, server_cpu, others)


def rotation(variants: list[Variant], round_no: int) -> list[Variant]:
    """Round ``round_no``'s order: the list rotated by the round number."""
    shift = round_no % len(variants)
    return variants[shift:] + variants[:shift]


def run(variants: list[Variant], redis: RedisServer, options: Options) -> list[Summary]:
    """Check every variant, then measure the available ones in ``options.rounds`` interleaved rounds."""
    summaries = {}
    for variant in variants:
        status = check(variant, redis)
        log(f"check {variant.name}: {status.availability} {status.reason}".rstrip())
        summaries[variant.name] = Summary(variant, status)
    active = [v for v in variants if summaries[v.name].status.availability in ("ok", "partial")]
    for round_no in range(options.rounds):
        for variant in rotation(active, round_no):
            try:
                m = measure(variant, redis, options, round_no)
            except (RuntimeError, OSError, Unavailable, subprocess.SubprocessError) as exc:
                # One failed run (a crash, a timeout on a loaded machine) must not lose the others.
                log(f"round {round_no + 1}/{options.rounds} {variant.name} failed: {exc}")
                summaries[variant.name].failures.append(f"round {round_no + 1}: {exc}")
                continue
            log(f"round {round_no + 1}/{options.rounds} {variant.name}: {m.result.rps:,.0f} req/s")
            summaries[variant.name].measurements.append(m)
    result = list(summaries.values())
    summarize(result)
    return result


def summarize(summaries: list[Summary]) -> None:
    """Fill in each row's medians; ratios are taken per round against that round's bare run."""
    bare_runs = [m for s in summaries if s.variant.name == "bare" for m in s.measurements]
    bare_by_round = {m.round: m.result.rps for m in bare_runs}
    bare_cpu_by_round = {m.round: m.cpu_us_per_request for m in bare_runs}
    for s in summaries:
        if not s.measured:
            continue
        s.rps = statistics.median(m.result.rps for m in s.measurements)
        ratios = [m.result.rps / bare_by_round[m.round] for m in s.measurements if bare_by_round.get(m.round)]
        s.ratio = statistics.median(ratios) if ratios else 0.0
        s.p50_us = statistics.median(m.result.p50_us for m in s.measurements)
        s.p99_us = statistics.median(m.result.p99_us for m in s.measurements)
        added = [
            1e6 / m.result.rps - 1e6 / bare_by_round[m.round]
            for m in s.measurements
            if m.result.rps and bare_by_round.get(m.round)
        ]
        s.added_us = statistics.median(added) if added else 0.0
        s.errors = sum(m.result.errors for m in s.measurements)
        requests = sum(m.result.requests for m in s.measurements)
        if requests:
            s.redis_per_request = sum(m.redis.commands for m in s.measurements) / requests
            s.scripts_per_request = sum(m.redis.scripts for m in s.measurements) / requests
        s.cpu_us = statistics.median(m.cpu_us_per_request for m in s.measurements)
        cpu_ratios = [
            bare_cpu_by_round[m.round] / m.cpu_us_per_request
            for m in s.measurements
            if bare_cpu_by_round.get(m.round) and m.cpu_us_per_request
        ]
        s.cpu_ratio = statistics.median(cpu_ratios) if cpu_ratios else 0.0
