"""bench/RESULTS.md: machine, versions, method, the tables and the verdict on each target."""

from __future__ import annotations

import datetime
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench.extras import SCRAPE_ROUTES, SCRAPE_WORKERS, LimiterCost, Scaling, Scrape
from bench.instructions import BASE_REQUESTS, CONNECTIONS, WARMUP_REQUESTS, InstructionCount
from bench.machine import BUSY_THRESHOLD, Machine, git_commit, versions
from bench.runner import Options, Summary
from bench.servers import LIMITER_TIMEOUT
from bench.variants import ALL_ON_MAX_P99_FACTOR, SCALING_TARGET, TARGETS, Target

# A limiter whose script ran for fewer requests than this share skipped Redis (timeouts, breaker).
FULL_DECISIONS = 0.99


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
        "| variant | what | req/s | ratio to bare | p50 ms | p99 ms | added µs/req | server CPU µs/req "
        "| CPU-time ratio | Redis scripts/req (all cmds) | status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in report.summaries:
        if not s.measured:
            lines.append(f"| {s.variant.name} | {s.variant.description} |{' – |' * 8} {_status(s)} |")
            continue
        lines.append(
            f"| {s.variant.name} | {s.variant.description} | {s.rps:,.0f} | {s.ratio:.2f} | {_ms(s.p50_us)} | "
            f"{_ms(s.p99_us)} | {s.added_us:+.0f} | {s.cpu_us:.0f} | {s.cpu_ratio:.2f} | {_redis(s)} | "
            f"{_status(s)} |"
        )
    return lines


def _verdict(report: Report, target: Target, row: Summary, bare: Summary) -> str:
    if row.status.availability == "partial":
        return "n/a (not every feature built yet)"
    misses = []
    if row.ratio < target.min_ratio:
        # In µs of a bare request (at bare's median rate), so that the numbers agree with the ratio.
        bare_us = 1e6 / bare.rps
        added_us = (1 / row.ratio - 1) * bare_us if row.ratio else float("inf")
        budget_us = (1 / target.min_ratio - 1) * bare_us
        misses.append(
            f"ratio short by {target.min_ratio - row.ratio:.2f}: adds {added_us:.0f} µs/req, "
            f"budget {budget_us:.0f} µs (over by {added_us - budget_us:.0f} µs)"
        )
    if target.variant == "opskit-all" and row.p99_us > ALL_ON_MAX_P99_FACTOR * bare.p99_us:
        misses.append(f"p99 {row.p99_us / bare.p99_us:.1f}x bare (max {ALL_ON_MAX_P99_FACTOR:.0f}x)")
    verdict = "**pass**" if not misses else "**miss**: " + "; ".join(misses)
    if row.variant.needs_redis and row.scripts_per_request < FULL_DECISIONS:
        verdict += (
            f" (the limiter skipped Redis for {1 - row.scripts_per_request:.0%} of requests, failing open: "
            "the ratio flatters it)"
        )
    return verdict


def missed_targets(report: Report) -> list[str]:
    """The opskit variants that were measured and missed their target."""
    bare = report.row("bare")
    missed = []
    for target in TARGETS:
        row = report.row(target.variant)
        if bare is None or row is None or not row.measured or not bare.measured:
            continue
        if _verdict(report, target, row, bare).startswith("**miss"):
            missed.append(target.variant)
    return missed


def targets_table(report: Report) -> list[str]:
    bare = report.row("bare")
    lines = [
        "| target | opskit ratio | goal | verdict | opskit CPU-time ratio | opskit instruction ratio "
        "| peer ratio (this run) | peers (issue 8) |",
        "|---|---:|---|---|---:|---:|---|---|",
    ]
    for target in TARGETS:
        row = report.row(target.variant)
        peers = []
        for peer in target.peers:
            peer_row = report.row(peer)
            if peer_row is not None and peer_row.measured:
                peers.append(f"{peer} {peer_row.ratio:.2f}")
        peer_text = ", ".join(peers) or "not run"
        goal = f">= {target.min_ratio:.2f}"
        if target.variant == "opskit-all":
            goal += f", p99 <= {ALL_ON_MAX_P99_FACTOR:.0f}x bare"
        opskit_ratio, cpu_ratio = "–", "–"
        if row is None or bare is None or not bare.measured:
            verdict = "not run"
        elif not row.measured:
            verdict = "n/a (not built yet)"
        else:
            opskit_ratio = f"{row.ratio:.2f}"
            cpu_ratio = f"{row.cpu_ratio:.2f} ({'pass' if row.cpu_ratio >= target.min_ratio else 'miss'})"
            verdict = _verdict(report, target, row, bare)
        instr = report.instruction_ratio(target.variant)
        instr_ratio = f"{instr:.3f} ({'pass' if instr >= target.min_ratio else 'miss'})" if instr else "–"
        lines.append(
            f"| {target.label} | {opskit_ratio} | {goal} | {verdict} | {cpu_ratio} | {instr_ratio} | {peer_text} "
            f"| {target.issue_peer_ratios} |"
        )
    for scaling in report.scaling:
        if scaling.variant != "opskit-all":
            continue
        if not scaling.ratios:
            lines.append(
                f"| gunicorn 2 workers vs 1, all on | – | >= {SCALING_TARGET}x | n/a (not built yet) | | | | |"
            )
            continue
        verdict = (
            "**pass**" if scaling.ratio >= SCALING_TARGET else f"**miss** by {SCALING_TARGET - scaling.ratio:.2f}x"
        )
        lines.append(
            f"| gunicorn 2 workers vs 1, all on | {scaling.ratio:.2f}x | >= {SCALING_TARGET}x | {verdict} | | | "
            "| (see the scaling section) |"
        )
    return lines


def method(report: Report) -> list[str]:
    o = report.options
    pinning = (
        "The server (uvicorn, 1 worker, `--loop uvloop --http httptools --no-access-log --log-level warning`) "
        "runs pinned to CPU 0 with `taskset -c 0`; `wrk` and the private `redis-server` (standing for another "
        "host) are pinned to CPU 1."
        if o.pin
        else "Nothing is pinned (fewer than 2 CPUs): server, wrk and Redis share the CPU."
    )
    return [
        "- App: FastAPI `GET /items/{item_id}`, async, a small JSON body; one app module (`bench/apps.py`) "
        "builds every variant (`uvicorn --factory bench.apps:create`, variant named by `BENCH_VARIANT`).",
        f"- {pinning}",
        f"- Load: `wrk -t{o.threads} -c{o.connections} -d{o.duration:g}s --latency` on loopback against "
        "`/items/1`; numbers read from a Lua `done` hook.",
        "- Before measuring, each variant is started once and probed: 20 requests must answer 200 and every "
        "feature must leave its trace (X-Request-ID header, an access-log line on stdout, `/metrics` series, "
        "a span reaching the exporter, one Redis script call per request). An opskit variant whose feature is "
        "missing is reported n/a (not built yet) instead of being measured as if it worked.",
        f"- Every measurement starts a fresh server, warms it up for {o.warmup:g} s with wrk, then measures for "
        f"{o.duration:g} s. {o.rounds} interleaved rounds: each round runs every variant once, the order rotated "
        "by one each round.",
        "- Per variant: median req/s over the rounds; ratio to bare = median of the per-round ratios (bare of "
        "the same round); p50/p99 = median over rounds of wrk's percentiles; added µs/req = median over rounds "
        "of 1e6/req/s − 1e6/bare req/s; in the verdicts, µs are (1/ratio − 1) x bare's µs per request. "
        "Redis script calls (EVAL/EVALSHA) and all commands (those a script runs "
        "included) per request, from `INFO commandstats` around the run.",
        "- Server CPU µs/req: user + system CPU time of the server process (all threads, from /proc) during the "
        "measured run, divided by the requests served; CPU-time ratio = bare's CPU µs/req ÷ the variant's "
        "(median of per-round ratios). On a busy machine other work steals time from the server's core, which "
        "lowers req/s but hardly changes CPU time per request, so this ratio is the steadier estimate of the "
        "throughput ratio a quiet machine would show. Verdicts use the throughput ratio, as issue 8 states.",
        "- Access logs go to the server's real stdout, redirected to a file (as a pipe or file in production). "
        "Tracing: 100 % sampled, `BatchSpanProcessor` to an exporter that drops the spans (same for opskit and "
        "the OTel instrumentation). Limiters: the same never-reached limit, against the same private Redis "
        f"(flushed before each run); opskit's Redis timeout is set to {LIMITER_TIMEOUT} s "
        "(`OPSKIT_REDIS_TIMEOUT`) so that every decision is measured: with the default 50 ms, a saturated event "
        "loop reads some replies late and the limiter fails open for a share of requests.",
        "- Peer stack: asgi-correlation-id, prometheus-fastapi-instrumentator (`Instrumentator().instrument(app)"
        ".expose(app)`), opentelemetry-instrumentation-fastapi, the usual structlog access log "
        "(structlog's recommended production pipeline: filtering bound logger, `TimeStamper`, `JSONRenderer` "
        'printing to stdout; an `@app.middleware("http")` access-log middleware) and slowapi '
        "(`default_limits`, Redis `storage_uri`, `SlowAPIMiddleware`).",
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
        "| variant | 1 worker req/s | 2 workers req/s | ratio (median of rounds) | vs bare's scaling | status |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for s in report.scaling:
        if not s.ratios:
            lines.append(f"| {s.variant} | – | – | – | – | {s.status.availability} ({s.status.reason}) |")
            continue
        note = s.status.availability if s.status.availability != "partial" else f"partial ({s.status.reason})"
        relative = f"{s.ratio / bare.ratio:.2f}" if bare is not None and bare.ratio else "–"
        lines.append(
            f"| {s.variant} | {s.median_rps(1):,.0f} | {s.median_rps(2):,.0f} | {s.ratio:.2f}x | {relative} | {note} |"
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
        why = "not in this run's variants" if report.row("opskit-ratelimit") is None else "n/a (not built yet)"
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
    shares = [x.other_cpu_share for s in report.summaries for x in s.measurements]
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
        f"max {max(shares, default=0.0):.0%}",
        "- " + "; ".join(f"{k} {v}" for k, v in m.tools.items()),
        "- " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        "",
        "## Method",
        "",
        *method(report),
        "",
        "## Targets (issue 8)",
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
    ]
    if report.failures:
        lines += ["## Measurements that failed", "", *(f"- {failure}" for failure in report.failures), ""]
    for name, text in report.profiles.items():
        lines += [f"## Where the time goes: {name}", "", "```", text.rstrip(), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def write(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(report))
