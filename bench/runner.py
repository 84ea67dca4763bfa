"""The main measurement: check each variant really does its job, then rounds of paired wrk bursts beside bare."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bench import wrk
from bench.processes import RedisServer
from bench.servers import (
    LOAD_CPU,
    SERVER_CPU,
    AppServer,
    RedisCalls,
    Unavailable,
    app_server,
    cpu_jiffies,
    process_cpu_seconds,
    redis_calls,
)
from bench.variants import BY_NAME, SHARED_TABLE, Variant

PROBE_REQUESTS = 20
# After a burst, the loaded server counts as drained once it used under 5 % of a CPU over 20 ms
# and none of its threads is runnable.
DRAIN_STEP = 0.02
DRAIN_QUIET = 0.05
DRAIN_TIMEOUT = 5.0
Availability = Literal["ok", "partial", "n/a", "error"]


@dataclass(frozen=True)
class Options:
    """How the main table is measured.

    ``duration`` is the measured load each variant gets per round, split into bursts of ``burst``
    seconds; bare gets as many bursts beside it, so a round loads each pair for twice ``duration``.
    """

    duration: float = 4.0
    burst: int = 1
    warmup: float = 1.0
    rounds: int = 5
    connections: int = 64
    threads: int = 1
    pin: bool = True

    @property
    def pairs(self) -> int:
        """Adjacent (bare, variant) burst pairs per variant per round."""
        return max(1, round(self.duration / self.burst))


@dataclass(frozen=True)
class Status:
    """Whether a variant could be built and showed every sign of its features working."""

    availability: Availability
    reason: str = ""


@dataclass(frozen=True)
class Burst:
    """One short wrk run against one server of a pair while the other server sits unloaded."""

    variant: str
    round: int
    result: wrk.WrkResult
    server_cpu_s: float = 0.0
    other_cpu_share: float = 0.0
    idle_cpu_share: float = 0.0
    in_flight: int = 0

    @property
    def served(self) -> int:
        """Requests the server handled: wrk's answered ones and the one each connection left in flight."""
        return self.result.requests + self.in_flight

    @property
    def cpu_us_per_request(self) -> float:
        """Server CPU time per request: unlike req/s, it barely moves when other work steals the core."""
        return self.server_cpu_s * 1e6 / self.result.requests if self.result.requests else 0.0


@dataclass(frozen=True)
class Pair:
    """Two adjacent bursts, one on bare and one on the variant, a second or two apart."""

    bare: Burst
    variant: Burst
    bare_first: bool

    @property
    def ratio(self) -> float:
        """The variant's req/s over bare's."""
        return self.variant.result.rps / self.bare.result.rps if self.bare.result.rps else 0.0

    @property
    def cpu_ratio(self) -> float:
        """Bare's server CPU µs per request over the variant's."""
        variant_cpu = self.variant.cpu_us_per_request
        return self.bare.cpu_us_per_request / variant_cpu if variant_cpu else 0.0

    @property
    def added_us(self) -> float:
        """Wall-clock µs per request the variant adds: 1e6/variant req/s − 1e6/bare req/s."""
        variant_rps, bare_rps = self.variant.result.rps, self.bare.result.rps
        return 1e6 / variant_rps - 1e6 / bare_rps if variant_rps and bare_rps else 0.0


@dataclass(frozen=True)
class Session:
    """One round of one variant: its server and a bare one side by side, loaded in alternating bursts."""

    variant: str
    round: int
    pairs: list[Pair]
    redis: RedisCalls


Spread = tuple[float, float]


@dataclass
class Summary:
    """A variant's row: its own bursts' medians, and ratios from the pairs it ran in."""

    variant: Variant
    status: Status
    bursts: list[Burst] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)
    redis: RedisCalls = RedisCalls(0, 0)
    failures: list[str] = field(default_factory=list)
    rps: float = 0.0
    ratio: float = 0.0
    ratio_spread: Spread | None = None
    p50_us: float = 0.0
    p99_us: float = 0.0
    added_us: float = 0.0
    errors: int = 0
    redis_per_request: float = 0.0
    scripts_per_request: float = 0.0
    cpu_us: float = 0.0
    cpu_ratio: float = 0.0
    cpu_ratio_spread: Spread | None = None

    @property
    def measured(self) -> bool:
        return bool(self.bursts)

    def add(self, session: Session, *, as_bare: bool = False) -> None:
        """Take a session's bursts: bare's side of it for the bare row, the variant's side and pairs otherwise."""
        if as_bare:
            self.bursts.extend(pair.bare for pair in session.pairs)
            return
        self.bursts.extend(pair.variant for pair in session.pairs)
        self.pairs.extend(session.pairs)
        self.redis = RedisCalls(
            self.redis.commands + session.redis.commands, self.redis.scripts + session.redis.scripts
        )


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
        # http_request*: the default naming's series; http_server_request*: OpenTelemetry's.
        if status != 200 or (b"http_request" not in body and b"http_server_request" not in body):
            missing.append("metrics (no /metrics with http_request* or http_server_request* series)")
    server.stop()
    if "request_id" in variant.evidence and "x-request-id" not in last_headers:
        missing.append("request ID (no X-Request-ID response header)")
    if "access_log" in variant.evidence and "/items/1" not in server.process.stdout():
        missing.append("access log (no line about /items/1 on stdout)")
    if "spans" in variant.evidence and not server.span_marker.exists():
        missing.append("tracing (no span reached the exporter)")
    if "otlp" in variant.evidence and not server.span_marker.with_name(server.span_marker.name + ".otlp").exists():
        missing.append("OTLP export (no metrics or logs reached the OTLP receiver)")
    if "redis" in variant.evidence and (redis_calls(redis) - redis_before).scripts < PROBE_REQUESTS:
        missing.append("rate limiter (fewer Redis script calls than requests)")
    if "redis_share" in variant.evidence and not 0 < (redis_calls(redis) - redis_before).scripts < PROBE_REQUESTS:
        missing.append("local shares (not one Redis call for many decisions)")
    table = server.workdir / SHARED_TABLE
    if "shared_table" in variant.evidence and not (table.exists() and table.read_bytes()[:8] == b"OPSKRLT1"):
        missing.append("shared-memory limiter (no table in the work directory)")
    return missing


def check(variant: Variant, redis: RedisServer) -> Status:
    """Start ``variant``, send a few requests, and look for the evidence of each of its features.

    An opskit variant that cannot be built or leaves no trace of a feature is "n/a" (feature unavailable);
    a bare or peer variant in that state is an "error" of the harness, reported, not measured.
    """
    before = redis_calls(redis)
    try:
        with app_server(variant, redis.url) as server:
            missing = _missing_evidence(variant, server, redis, before)
    except Unavailable as exc:
        if variant.family != "opskit":
            return Status("error", f"did not start: {exc}")
        return Status("n/a", f"feature unavailable: {exc}")
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return Status("error", f"{type(exc).__name__}: {exc}")
    if not missing:
        return Status("ok")
    if variant.family != "opskit":
        return Status("error", "misconfigured, missing: " + "; ".join(missing))
    if variant.name == "opskit-all":
        return Status("partial", "measured without: " + "; ".join(missing))
    return Status("n/a", "feature unavailable: " + "; ".join(missing))


def server_cpu_seconds(pid: int) -> float:
    """On-CPU seconds of every live thread of ``pid``, to the nanosecond (``schedstat``), else from ``stat``.

    ``/proc/<pid>/stat`` counts in clock ticks (10 ms), too coarse for one-second bursts.
    """
    try:
        return (
            sum(int((task / "schedstat").read_text().split()[0]) for task in Path(f"/proc/{pid}/task").iterdir()) / 1e9
        )
    except (OSError, ValueError, IndexError):
        return process_cpu_seconds(pid)


def tree_cpu_seconds(pid: int) -> float:
    """:func:`server_cpu_seconds` of ``pid`` and every live process under it (gunicorn and its workers)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            total += server_cpu_seconds(current)
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except (OSError, ValueError):  # a process that exited meanwhile
            continue
    return total


def _burst(loaded: AppServer, idle: AppServer, options: Options, round_no: int) -> Burst:
    """One burst of wrk on ``loaded``; ``idle``'s CPU meanwhile shows whether work leaked across."""
    cpu = LOAD_CPU if options.pin else None
    server_before, idle_before = server_cpu_seconds(loaded.process.pid), server_cpu_seconds(idle.process.pid)
    cpu0_before = cpu_jiffies(SERVER_CPU)
    result = wrk.run(
        loaded.url + "/items/1",
        duration=options.burst,
        connections=options.connections,
        threads=options.threads,
        cpu=cpu,
    )
    cpu0_after = cpu_jiffies(SERVER_CPU)
    server_cpu = server_cpu_seconds(loaded.process.pid) - server_before
    idle_cpu = server_cpu_seconds(idle.process.pid) - idle_before
    busy, total = cpu0_after[0] - cpu0_before[0], cpu0_after[1] - cpu0_before[1]
    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    others = max(0.0, (busy * tick - server_cpu - idle_cpu) / (total * tick)) if total else 0.0
    idle_share = idle_cpu / (total * tick) if total else 0.0
    drain(loaded.process.pid)
    in_flight = max(options.connections, options.threads)
    return Burst(loaded.variant.name, round_no, result, server_cpu, others, idle_share, in_flight)


def _runnable(pid: int) -> bool:
    """Whether any thread of ``pid`` is running or waiting for a CPU (state R in /proc)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "R":
                return True
        except (OSError, IndexError):
            continue
    return False


def drain(pid: int, *, step: float = DRAIN_STEP, timeout: float = DRAIN_TIMEOUT) -> float:
    """Wait until process ``pid`` has stopped working: no thread runnable and almost no CPU used over a step.

    When wrk stops, each of its connections leaves one request in flight, which the server still
    serves: for a slow variant that is a good part of a second of CPU, and it must not run during the
    other server's next burst. Returns the seconds waited.
    """
    start = time.monotonic()
    used = server_cpu_seconds(pid)
    while time.monotonic() - start < timeout:
        time.sleep(step)
        now = server_cpu_seconds(pid)
        if now - used < DRAIN_QUIET * step and not _runnable(pid):
            break
        used = now
    return time.monotonic() - start


def pair_order(pair_no: int, round_no: int) -> bool:
    """Whether bare goes first in a pair: alternating pair by pair, and the first pair alternates by round."""
    return (pair_no + round_no) % 2 == 0


def measure(variant: Variant, redis: RedisServer, options: Options, round_no: int) -> Session:
    """Fresh servers of ``variant`` and bare side by side, both warmed up, then ``options.pairs`` pairs of bursts.

    Both servers are pinned to the server CPU; only one is loaded at a time. Within each pair the
    order alternates (bare, variant / variant, bare / ...), so a linear drift of the machine's speed
    favours neither side and anything slower than a pair cancels in the pair's ratio.
    """
    redis.cli("FLUSHALL")
    cpu = LOAD_CPU if options.pin else None
    with contextlib.ExitStack() as stack:
        bare = stack.enter_context(app_server(BY_NAME["bare"], redis.url, pin_cpu=options.pin))
        server = stack.enter_context(app_server(variant, redis.url, pin_cpu=options.pin))
        if options.warmup > 0:
            for warm in (bare, server):
                wrk.run(
                    warm.url + "/items/1",
                    duration=options.warmup,
                    connections=options.connections,
                    threads=options.threads,
                    cpu=cpu,
                )
                drain(warm.process.pid)
        before = redis_calls(redis)
        pairs = []
        for pair_no in range(options.pairs):
            bare_first = pair_order(pair_no, round_no)
            if bare_first:
                bare_burst = _burst(bare, server, options, round_no)
                variant_burst = _burst(server, bare, options, round_no)
            else:
                variant_burst = _burst(server, bare, options, round_no)
                bare_burst = _burst(bare, server, options, round_no)
            pairs.append(Pair(bare_burst, variant_burst, bare_first))
        commands = redis_calls(redis) - before
    return Session(variant.name, round_no, pairs, commands)


def rotation(variants: list[Variant], round_no: int) -> list[Variant]:
    """Round ``round_no``'s order: the list rotated by the round number."""
    if not variants:
        return []
    shift = round_no % len(variants)
    return variants[shift:] + variants[:shift]


def run(variants: list[Variant], redis: RedisServer, options: Options) -> list[Summary]:
    """Check every variant, then measure each available one beside bare in ``options.rounds`` rounds.

    Bare's row gathers bare's bursts from every session; a failed bare check measures nothing.
    """
    summaries = {}
    for variant in variants:
        status = check(variant, redis)
        log(f"check {variant.name}: {status.availability} {status.reason}".rstrip())
        summaries[variant.name] = Summary(variant, status)
    bare_row = summaries.get("bare")
    if bare_row is None or bare_row.status.availability != "ok":
        log("bare is not available: nothing to pair with")
        result = list(summaries.values())
        summarize(result)
        return result
    active = [v for v in variants if v.name != "bare" and summaries[v.name].status.availability in ("ok", "partial")]
    for round_no in range(options.rounds):
        for variant in rotation(active, round_no):
            where = f"round {round_no + 1}/{options.rounds} {variant.name}"
            started = time.monotonic()
            try:
                session = measure(variant, redis, options, round_no)
            except (RuntimeError, OSError, Unavailable, subprocess.SubprocessError) as exc:
                # One failed session (a crash, a timeout on a loaded machine) must not lose the others.
                log(f"{where} failed: {exc}")
                summaries[variant.name].failures.append(f"round {round_no + 1}: {exc}")
                continue
            ratios = " ".join(f"{pair.ratio:.3f}" for pair in session.pairs)
            log(f"{where}: pair ratios {ratios} ({time.monotonic() - started:.1f} s)")
            summaries[variant.name].add(session)
            bare_row.add(session, as_bare=True)
    result = list(summaries.values())
    summarize(result)
    return result


def spread(values: list[float]) -> Spread:
    """Interquartile range (25th to 75th percentile, inclusive method); one value is its own range."""
    if len(values) < 2:
        return (values[0], values[0]) if values else (0.0, 0.0)
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return (q1, q3)


def summarize(summaries: list[Summary]) -> None:
    """Fill in each row: medians of its own bursts; ratios as medians of its pairs' ratios.

    The median of adjacent pairs' ratios, not the ratio of summed requests: a burst that other work
    on the machine slowed down moves one pair's ratio, which the median then ignores, while in a
    ratio of sums it would shift the result by its whole share of the requests.
    """
    for s in summaries:
        if not s.measured:
            continue
        s.rps = statistics.median(b.result.rps for b in s.bursts)
        s.p50_us = statistics.median(b.result.p50_us for b in s.bursts)
        s.p99_us = statistics.median(b.result.p99_us for b in s.bursts)
        s.cpu_us = statistics.median(b.cpu_us_per_request for b in s.bursts)
        s.errors = sum(b.result.errors for b in s.bursts)
        requests = sum(b.served for b in s.bursts)
        if requests:
            s.redis_per_request = s.redis.commands / requests
            s.scripts_per_request = s.redis.scripts / requests
        if s.variant.name == "bare":
            s.ratio, s.cpu_ratio, s.added_us = 1.0, 1.0, 0.0
            continue
        ratios = [p.ratio for p in s.pairs if p.ratio]
        cpu_ratios = [p.cpu_ratio for p in s.pairs if p.cpu_ratio]
        if ratios:
            s.ratio, s.ratio_spread = statistics.median(ratios), spread(ratios)
            s.added_us = statistics.median(p.added_us for p in s.pairs if p.ratio)
        if cpu_ratios:
            s.cpu_ratio, s.cpu_ratio_spread = statistics.median(cpu_ratios), spread(cpu_ratios)
