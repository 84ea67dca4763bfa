"""bench/RESULTS.md: machine, versions, method, the tables and the verdict on each target."""

from __future__ import annotations

import datetime
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bench.extras import SCRAPE_ROUTES, SCRAPE_WORKERS, LimiterCost, Scaling, Scrape
from bench.instructions import BASE_REQUESTS, CONNECTIONS, WARMUP_REQUESTS, InstructionCount
from bench.machine import BUSY_THRESHOLD, Machine, git_commit, versions
from bench.overload import Overload
from bench.overload import section as overload_section
from bench.runner import Options, Spread, Summary
from bench.servers import LIMITER_TIMEOUT
from bench.variants import ALL_ON_MAX_P99_FACTOR, SCALING_TARGET, TARGETS, Target

# A limiter whose script ran for fewer requests than this share skipped Redis (timeouts, breaker).
FULL_DECISIONS = 0.99
Judgement = Literal["pass", "miss", "within noise"]


@dataclass
class Report:
    """Everything one run measured."""

    command: str
    options: Options
    machine: Machine
    summaries: list[Summary]
    scaling: list[Scaling] = field(default_factory=list)
    scrapes: list[Scrape] = field(default_factory=list)
    limiter: LimiterCost | None = None
    overload: Overload | None = None
    started: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc))
    profiles: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    instructions: list[InstructionCount] = field(default_factory=list)
    instructions_extra: int = 0

    def row(self, name: str) -> Summary | None:
        return next((s for s in self.summaries if s.variant.name == name), None)

    def instruction_ratio(self, name: str) -> float | None:
        """Bare's instructions per request ÷ the variant's, when both were counted."""
        counts = {c.variant: c.per_request for c in self.instructions}
        bare, variant = counts.get("bare"), counts.get(name)
        return bare / variant if bare and variant else None


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def _redis(s: Summary) -> str:
    return f"{s.scripts_per_request:.2f} ({s.redis_per_request:.2f})" if s.redis_per_request else "–"


def _range(spread: Spread | None) -> str:
    return f"{spread[0]:.2f}–{spread[1]:.2f}" if spread is not None else "–"


def judge(ratio: float, spread: Spread | None, goal: float) -> Judgement:
    """pass or miss by the median ratio, unless the goal lies inside the pair ratios' spread: within noise."""
    if spread is not None and spread[0] <= goal <= spread[1]:
        return "within noise"
    return "pass" if ratio >= goal else "miss"


def _status(s: Summary) -> str:
    if s.status.availability in ("n/a", "error"):
        return f"{s.status.availability} ({s.status.reason})"
    if s.status.availability == "partial":
        return f"partial ({s.status.reason})"
    notes = [f"{s.errors} errors"] if s.errors else []
    if s.failures:
        notes.append(f"{len(s.failures)} failed run(s), first: {s.failures[0]}")
    if s.variant.needs_redis and s.scripts_per_request < FULL_DECISIONS:
        notes.append(f"only {s.scripts_per_request:.0%} of requests reached Redis (limiter failing open)")
    return ", ".join(["ok", *notes])


def variants_table(report: Report) -> list[str]:
    lines = [
        "| variant | what | req/s | ratio to bare | ratio IQR | p50 ms | p99 ms | added µs/req | server CPU µs/req "
        "| CPU-time ratio | Redis scripts/req (all cmds) | status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in report.summaries:
        if not s.measured:
            lines.append(f"| {s.variant.name} | {s.variant.description} |{' – |' * 9} {_status(s)} |")
            continue
        lines.append(
            f"| {s.variant.name} | {s.variant.description} | {s.rps:,.0f} | {s.ratio:.2f} | {_range(s.ratio_spread)} | "
            f"{_ms(s.p50_us)} | "
            f"{_ms(s.p99_us)} | {s.added_us:+.0f} | {s.cpu_us:.0f} | {s.cpu_ratio:.2f} | {_redis(s)} | "
            f"{_status(s)} |"
        )
    return lines


def _verdict(report: Report, target: Target, row: Summary, bare: Summary) -> str:
    if row.status.availability == "partial":
        return "n/a (not every feature built yet)"
    misses = []
    judgement = judge(row.ratio, row.ratio_spread, target.min_ratio)
    if judgement == "miss":
        # In µs of a bare request (at bare's median rate), so that the numbers agree with the ratio.
        bare_us = 1e6 / bare.rps
        added_us = (1 / row.ratio - 1) * bare_us if row.ratio else float("inf")
        budget_us = (1 / target.min_ratio - 1) * bare_us
        misses.append(
            f"ratio short by {target.min_ratio - row.ratio:.2f}: adds {added_us:.0f} µs/req, "
            f"budget {budget_us:.0f} µs (over by {added_us - budget_us:.0f} µs)"
        )
    if target.variant == "opskit-all" and row.p99_us > ALL_ON_MAX_P99_FACTOR * bare.p99_us:
        misses.append(f"p99 {row.p99_us / bare.p99_us:.1f}x bare (max {ALL_ON_MAX_P99_FACTOR:g}x)")
    noise = f"goal {target.min_ratio:.2f} inside the pair ratios' IQR {_range(row.ratio_spread)}"
    if misses:
        verdict = "**miss**: " + "; ".join(misses)
        if judgement == "within noise":
            verdict += f" (ratio within noise: {noise})"
    elif judgement == "within noise":
        verdict = f"**within noise**: {noise}"
    else:
        verdict = "**pass**"
    if row.variant.needs_redis and row.scripts_per_request < FULL_DECISIONS:
        verdict += (
            f" (the limiter skipped Redis for {1 - row.scripts_per_request:.0%} of requests, failing open: "
            "the ratio flatters it)"
        )
    return verdict


def unmet_targets(report: Report) -> list[str]:
    """The opskit variants that were measured and did not clearly pass: a miss, or within noise."""
    bare = report.row("bare")
    unmet = []
    for target in TARGETS:
        row = report.row(target.variant)
        if bare is None or row is None or not row.measured or not bare.measured:
            continue
        if _verdict(report, target, row, bare).startswith(("**miss", "**within noise")):
            unmet.append(target.variant)
    return unmet


def targets_table(report: Report) -> list[str]:
    bare = report.row("bare")
    lines = [
        "| target | opskit ratio (IQR) | goal | verdict | opskit CPU-time ratio | opskit instruction ratio "
        "| peer ratio (this run) | peers (reference run) | floor ratio (this run) |",
        "|---|---:|---|---|---:|---:|---|---|---|",
    ]
    for target in TARGETS:
        row = report.row(target.variant)
        peers = []
        for peer in target.peers:
            peer_row = report.row(peer)
            if peer_row is not None and peer_row.measured:
                peers.append(f"{peer} {peer_row.ratio:.2f} ({_range(peer_row.ratio_spread)})")
        peer_text = ", ".join(peers) or ("not run" if target.peers else "–")
        goal = f">= {target.min_ratio:.2f}"
        if target.variant == "opskit-all":
            goal += f", p99 <= {ALL_ON_MAX_P99_FACTOR:g}x bare"
        opskit_ratio, cpu_ratio = "–", "–"
        if row is None or bare is None or not bare.measured:
            verdict = "not run"
        elif not row.measured:
            verdict = "n/a (feature unavailable)"
        else:
            opskit_ratio = f"{row.ratio:.2f} ({_range(row.ratio_spread)})"
            cpu_ratio = f"{row.cpu_ratio:.2f} ({judge(row.cpu_ratio, row.cpu_ratio_spread, target.min_ratio)})"
            verdict = _verdict(report, target, row, bare)
        instr = report.instruction_ratio(target.variant)
        instr_ratio = f"{instr:.3f} ({'pass' if instr >= target.min_ratio else 'miss'})" if instr else "–"
        floor_row = report.row(target.floor) if target.floor else None
        floor_text = "–" if not target.floor else "not run"
        if floor_row is not None and floor_row.measured:
            floor_instr = report.instruction_ratio(target.floor)
            floor_text = f"{target.floor} {floor_row.ratio:.2f} ({_range(floor_row.ratio_spread)})"
            if floor_instr:
                floor_text += f", instructions {floor_instr:.3f}"
        lines.append(
            f"| {target.label} | {opskit_ratio} | {goal} | {verdict} | {cpu_ratio} | {instr_ratio} | {peer_text} "
            f"| {target.reference_peer_ratios} | {floor_text} |"
        )
    for scaling in report.scaling:
        if scaling.variant != "opskit-all":
            continue
        if not scaling.ratios:
            lines.append(
                "| gunicorn 2 workers vs 1, all on: requests per CPU-second | – "
                f"| >= {SCALING_TARGET} | n/a (feature unavailable) | | | | | |"
            )
            continue
        efficiency = scaling.efficiency if scaling.efficiencies else None
        if efficiency is None:
            verdict = "n/a (CPU time not measured)"
        elif efficiency >= SCALING_TARGET:
            verdict = "**pass**"
        else:
            verdict = f"**miss** by {SCALING_TARGET - efficiency:.2f}"
        shown = f"{efficiency:.2f}" if efficiency is not None else "–"
        lines.append(
            f"| gunicorn 2 workers vs 1, all on: requests per CPU-second | {shown} | >= {SCALING_TARGET} | {verdict} "
            f"(throughput {scaling.ratio:.2f}x; cores busy {scaling.median_cores(1):.2f} -> "
            f"{scaling.median_cores(2):.2f}) | | | | (see the scaling section) | |"
        )
    return lines


def method(report: Report) -> list[str]:
    o = report.options
    pinning = (
        "Every app server (uvicorn, 1 worker, `--loop uvloop --http httptools --no-access-log --log-level "
        "warning`) runs pinned to CPU 0 with `taskset -c 0`; `wrk` and the private `redis-server` (standing "
        "for another host) are pinned to CPU 1."
        if o.pin
        else "Nothing is pinned (fewer than 2 CPUs): server, wrk and Redis share the CPU."
    )
    return [
        "- App: FastAPI `GET /items/{item_id}`, async, a small JSON body; one app module (`bench/apps.py`) "
        "builds every variant (`uvicorn --factory bench.apps:create`, variant named by `BENCH_VARIANT`).",
        f"- {pinning}",
        f"- Load: `wrk -t{o.threads} -c{o.connections} -d{o.burst}s --latency` bursts on loopback against "
        "`/items/1`; numbers read from a Lua `done` hook.",
        "- Before measuring, each variant is started once and probed: 20 requests must answer 200 and every "
        "feature must leave its trace (X-Request-ID header, an access-log line on stdout, `/metrics` series, "
        "a span reaching the exporter, one Redis script call per request). An opskit variant whose feature is "
        "missing is reported n/a (feature unavailable) instead of being measured as if it worked.",
        "- Paired bursts: each ratio to bare comes from bare and the variant loaded in turn, a burst or two "
        "apart, so that any drift of the machine's speed slower than a pair (other work on a shared host comes "
        "and goes over seconds to minutes) cancels in the pair's ratio. Each session starts a fresh bare "
        "server and a fresh server of the variant side by side, both pinned to the server CPU; each is "
        f"warmed up with {o.warmup:g} s of wrk, then they take turns: {o.pairs} pairs of {o.burst} s bursts, "
        "only one server loaded at a time, the order inside a pair alternating (bare then variant, variant "
        "then bare, ...; the first pair's order alternates by round), so that neither side always runs first "
        "and a steady drift favours neither. After each burst and each warm-up the harness waits until the "
        "loaded server has finished the requests wrk left in flight (one per connection; no thread runnable, "
        "under 5 % of a CPU used over 20 ms) before the next burst starts, so that no work of one server runs "
        "in the other's burst (the machine section gives the share of the core the unloaded server still "
        f"used). Rounds: {o.rounds}; each runs one session per variant, the "
        f"variants' order rotated by one each round. So each variant has {o.rounds * o.pairs} pairs "
        f"({o.rounds * o.pairs * o.burst:g} s measured) and bare as many bursts beside every variant.",
        "- Ratio to bare = median over the variant's pairs of (variant req/s ÷ bare req/s of the same pair). "
        "The median rather than the ratio of summed requests: a burst that other work slowed down moves one "
        "pair's ratio, which the median ignores, while in a ratio of sums it weighs with all its requests. "
        "Ratio IQR = the 25th to 75th percentile of those pair ratios: the spread to read a ratio against. "
        "A target verdict is **within noise** when the goal lies inside that IQR (neither a clear pass nor a "
        "clear miss); otherwise pass or miss by the median. Added µs/req = median over pairs of "
        "1e6/variant req/s − 1e6/bare req/s; in the verdicts, µs are (1/ratio − 1) x bare's µs per request.",
        "- Per row, from its own bursts (bare's row: bare's bursts from every session): req/s, p50 and p99 = "
        "medians over the bursts of wrk's figures. Redis script calls (EVAL/EVALSHA) and all commands (those a "
        "script runs included) per request, from `INFO commandstats` around each session's bursts (bare "
        "makes none), divided by the requests the variant served: those wrk counted plus the one each "
        "connection left in flight at the end of each burst.",
        "- Server CPU µs/req: on-CPU time of the server process (all threads, from /proc schedstat) during the "
        "burst, divided by the requests served; the column is the median over the row's bursts. CPU-time ratio "
        "= median over pairs of bare's CPU µs/req ÷ the variant's, judged against the goal like the throughput "
        "ratio (with its own IQR). Other work on the server's core lowers req/s but hardly changes CPU time per "
        "request, so this ratio is the steadier estimate of the throughput ratio a quiet machine would show. "
        "Verdicts use the throughput ratio.",
        "- Access logs go to the server's real stdout, redirected to a file (as a pipe or file in production). "
        "Tracing: 100 % sampled, exported over OTLP/HTTP to a real receiver (`bench.receiver`, decoding every "
        "batch with opentelemetry-proto, pinned to the load generator's core), the same for opskit, the OTel "
        "instrumentation (`BatchSpanProcessor`, `OTLPSpanExporter`) and the tracing floor. Limiters: the same "
        f"never-reached limit, against the same private Redis (flushed before each session); opskit's Redis "
        f"timeout is set to {LIMITER_TIMEOUT} s (`OPSKIT_REDIS_TIMEOUT`) so that every decision is measured: "
        "with the default 50 ms, a saturated event loop reads some replies late and the limiter fails open for "
        "a share of requests.",
        "- Peers, each wired as its README shows: asgi-correlation-id, prometheus-fastapi-instrumentator "
        "(`Instrumentator().instrument(app).expose(app)`), opentelemetry-instrumentation-fastapi, fastapi-limiter "
        "(a `RateLimiter` dependency, `FastAPILimiter.init` at startup) and slowapi (`default_limits`, Redis "
        "`storage_uri`, `SlowAPIMiddleware`); for the access log, the strongest hand-written structlog "
        "middleware (pure ASGI, structlog's performance recipe: cached filtering bound logger, orjson to bytes, "
        'opskit\'s fields) and the common `@app.middleware("http")` recipe. The peer stack is the strongest '
        "peer of each feature together; the common stack (the recipe and slowapi) has its own row.",
        "- Floors (`bench/floors.py`): for each feature, a pure ASGI middleware doing only what no "
        "implementation can avoid (set a context variable and add a header; one JSON line in a write per loop "
        "iteration; one counter increment; one span with fixed attributes encoded by a thread; one pipelined "
        "EVALSHA), so each target reads against what is physically possible here.",
    ]


def _dilation_note(counts: list[InstructionCount]) -> list[str]:
    env = next((c.env for c in counts if c.env), None)
    if not env:
        return []
    settings = ", ".join(f"`{name}={value}`" for name, value in env.items())
    return [
        "",
        "Timers fire per second, not per request, and under valgrind a request takes many times longer: the "
        "servers counted run with their time-based settings stretched by valgrind's slowdown, measured on bare "
        f"in the same run ({settings}), so that a timer costs each request the share it costs natively.",
    ]


def instructions_section(report: Report) -> list[str]:
    if not report.instructions:
        return []
    counts = {c.variant: c.per_request for c in report.instructions}
    bare = counts.get("bare")
    lines = [
        "## Instructions per request (valgrind)",
        "",
        "Wall-clock numbers on a shared machine move by several percent between runs; instruction counts do "
        "not. Each variant's uvicorn server (same flags, not pinned) runs under `valgrind --tool=cachegrind "
        f"--cache-sim=no` twice, serving {BASE_REQUESTS} then {BASE_REQUESTS} + {report.instructions_extra} "
        f"keep-alive requests over {CONNECTIONS} connections after the same {WARMUP_REQUESTS}-request warm-up "
        "(`PYTHONHASHSEED=0`); the difference divided by the extra requests is what one request costs in user "
        "space, server and app included. Instruction ratio = bare's count ÷ the variant's: the throughput ratio "
        "a quiet machine would show if every instruction cost the same (kernel time, cache misses and, for the "
        "limiters, the Redis round trip are not in it).",
        *_dilation_note(report.instructions),
        "",
        "| variant | instructions/req | added vs bare | instruction ratio | status |",
        "|---|---:|---:|---:|---|",
    ]
    for c in report.instructions:
        if c.per_request is None:
            lines.append(f"| {c.variant} | – | – | – | n/a ({c.reason}) |")
            continue
        added = f"{c.per_request - bare:+,.0f}" if bare else "–"
        ratio = f"{bare / c.per_request:.3f}" if bare else "–"
        lines.append(f"| {c.variant} | {c.per_request:,.0f} | {added} | {ratio} | ok |")
    return [*lines, ""]


def scaling_section(report: Report) -> list[str]:
    if not report.scaling:
        return []
    bare = next((s for s in report.scaling if s.variant == "bare" and s.ratios), None)
    lines = [
        "## gunicorn scaling: 2 workers vs 1",
        "",
        "gunicorn with `uvicorn_worker.UvicornWorker`, 1 then 2 workers (order alternating per round), "
        "**not pinned**: with only "
        f"{report.machine.cores} CPUs, wrk shares the cores with the workers, so 2 workers cannot reach 2x here; "
        "the private Redis (pinned to CPU 1) takes its share too. The bare app's ratio shows the ceiling this "
        "machine allows, and the column after it compares each variant's scaling with that ceiling.",
        "",
        "Cores busy: the server's CPU time (gunicorn and its workers, all threads) during the measured run, divided "
        "by its length. Requests per CPU-second, 2 vs 1: what each worker-second of CPU served with 2 workers over "
        "what it served with 1 (median of rounds). 1.00 means the second worker adds throughput in proportion to "
        "the CPU it gets: nothing in the server (locks, shared files, the shared Redis connection per worker) "
        "makes workers wait on each other, and the 2x goal is then a matter of free cores.",
        "",
        "| variant | 1 worker req/s | 2 workers req/s | ratio (median of rounds) | vs bare's scaling "
        "| cores busy (1 / 2 workers) | requests per CPU-second, 2 vs 1 | status |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in report.scaling:
        if not s.ratios:
            lines.append(f"| {s.variant} | – | – | – | – | – | – | {s.status.availability} ({s.status.reason}) |")
            continue
        note = s.status.availability if s.status.availability != "partial" else f"partial ({s.status.reason})"
        relative = f"{s.ratio / bare.ratio:.2f}" if bare is not None and bare.ratio else "–"
        cores = f"{s.median_cores(1):.2f} / {s.median_cores(2):.2f}" if s.cores else "–"
        efficiency = f"{s.efficiency:.2f}" if s.efficiencies else "–"
        lines.append(
            f"| {s.variant} | {s.median_rps(1):,.0f} | {s.median_rps(2):,.0f} | {s.ratio:.2f}x | {relative} "
            f"| {cores} | {efficiency} | {note} |"
        )
    return [*lines, ""]


def scrape_section(report: Report) -> list[str]:
    if not report.scrapes:
        return []
    lines = [
        f"## `/metrics` scrape time: {SCRAPE_WORKERS} gunicorn workers, {SCRAPE_ROUTES} routes",
        "",
        f"Traffic spread over {SCRAPE_ROUTES} routes on {SCRAPE_WORKERS} workers (multiprocess mode, "
        "`PROMETHEUS_MULTIPROC_DIR` set), then 30 sequential scrapes.",
        "",
        "| variant | median ms | max ms | body bytes | samples | status |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for s in report.scrapes:
        if not s.times_ms:
            lines.append(f"| {s.variant} | – | – | – | – | n/a ({s.status.reason}) |")
            continue
        lines.append(
            f"| {s.variant} | {s.median_ms:.1f} | {s.max_ms:.1f} | {s.size_bytes:,} | {s.samples:,} | "
            f"{s.status.availability} |"
        )
    return [*lines, ""]


def limiter_section(report: Report) -> list[str]:
    limiter = report.limiter
    if limiter is None:
        return []
    lines = [
        "## Limiter decisions per second vs raw Redis EVALSHA",
        "",
        f"Raw rate: `redis-benchmark -c {report.options.connections} EVALSHA` of {limiter.script_source}, "
        "Redis pinned to CPU 0 and redis-benchmark to CPU 1: "
        f"**{limiter.raw_evalsha_rps:,.0f} EVALSHA/s**. Through the app (1 uvicorn worker, every request is "
        "one decision):",
        "",
        "| variant | decisions/s | share of raw EVALSHA rate | requests that ran the script | Redis cmds/request |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in limiter.rows:
        share = s.rps / limiter.raw_evalsha_rps if limiter.raw_evalsha_rps else 0.0
        lines.append(
            f"| {s.variant.name} | {s.rps:,.0f} | {share:.1%} | {s.scripts_per_request:.0%} | "
            f"{s.redis_per_request:.2f} |"
        )
    if not limiter.rows:
        why = "not in this run's variants" if report.row("opskit-ratelimit") is None else "n/a (feature unavailable)"
        lines.append(f"| opskit-ratelimit | {why} | | | |")
    return [*lines, ""]


def render(report: Report) -> str:
    m = report.machine
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `{report.command}` on {report.started:%Y-%m-%d %H:%M} UTC from commit {git_commit()}. "
        "Regenerate with `make bench`.",
        "",
    ]
    shares = [x.other_cpu_share for s in report.summaries for x in s.bursts]
    idle = [x.idle_cpu_share for s in report.summaries for x in s.bursts]
    stolen = statistics.median(shares) if shares else 0.0
    # What matters is the time other work took from the server's core while it was measured.
    busy = stolen > BUSY_THRESHOLD if shares else m.busy
    if busy:
        lines += [
            f"> **Busy machine**: other work used {m.busy_before:.0%} of the CPUs just before this run and "
            f"{m.busy_after:.0%} just after it, and took a median {stolen:.0%} of the server's core during the "
            "measurements, so absolute numbers are low and noisy; the ratios, and above all the CPU-time ratios, "
            "are the meaningful figures.",
            "",
        ]
    elif m.busy:
        lines += [
            f"> Shared machine: other work used {m.busy_before:.0%} of the CPUs just before this run and "
            f"{m.busy_after:.0%} just after it, but only a median {stolen:.0%} (max {max(shares):.0%}) of the "
            "server's core during the measurements.",
            "",
        ]
    lines += [
        "## Machine and versions",
        "",
        f"- CPU: {m.cpu_model}, {m.cores} cores; Linux {m.kernel}; Python {m.python}",
        f"- CPU used by other work: {m.busy_before:.0%} before the run, {m.busy_after:.0%} after it; "
        f"share of the server's core (CPU 0) used by other work during the measurements: median {stolen:.0%}, "
        f"max {max(shares, default=0.0):.0%}; share of that core the unloaded server of a pair used during the "
        f"other's bursts: median {statistics.median(idle) if idle else 0.0:.1%}, max {max(idle, default=0.0):.1%}",
        "- " + "; ".join(f"{k} {v}" for k, v in m.tools.items()),
        "- " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        "",
        "## Method",
        "",
        *method(report),
        "",
        "## Targets",
        "",
        *targets_table(report),
        "",
        "## All variants",
        "",
        *variants_table(report),
        "",
        *instructions_section(report),
        *scaling_section(report),
        *scrape_section(report),
        *limiter_section(report),
        *overload_section(report.overload),
    ]
    if report.failures:
        lines += ["## Measurements that failed", "", *(f"- {failure}" for failure in report.failures), ""]
    for name, text in report.profiles.items():
        lines += [f"## Where the time goes: {name}", "", "```", text.rstrip(), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def write(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(report))
