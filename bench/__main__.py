"""``python -m bench``: measure every variant and write bench/RESULTS.md."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from bench import extras, instructions, machine, overload, profile, report, runner
from bench.processes import RedisServer
from bench.servers import LOAD_CPU, Unavailable, private_redis
from bench.variants import BY_NAME, Variant, select

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "RESULTS.md"
# The runs beside the main table are single long runs, not paired bursts.
EXTRAS_DURATION = 10.0
EXTRAS_WARMUP = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    defaults = runner.Options()
    parser.add_argument(
        "--duration",
        type=float,
        default=defaults.duration,
        help="measured seconds per variant per round, in whole bursts; bare gets as many beside it "
        f"(default {defaults.duration:g})",
    )
    parser.add_argument(
        "--burst",
        type=int,
        default=defaults.burst,
        help=f"seconds of one wrk burst; bare and the variant alternate burst by burst (default {defaults.burst})",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=defaults.warmup,
        help=f"warm-up seconds of each server of a pair before its first burst (default {defaults.warmup:g})",
    )
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help=f"rounds (default {defaults.rounds})")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--variants",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=None,
        help=f"comma-separated subset (bare is always added); known: {', '.join(BY_NAME)}",
    )
    parser.add_argument(
        "--no-extras", action="store_true", help="skip gunicorn scaling, scrape, limiter and overload runs"
    )
    parser.add_argument(
        "--extras-duration",
        type=float,
        default=EXTRAS_DURATION,
        help=f"seconds per run of the scaling, scrape, limiter and overload runs (default {EXTRAS_DURATION:g})",
    )
    parser.add_argument(
        "--extras-warmup",
        type=float,
        default=EXTRAS_WARMUP,
        help=f"warm-up seconds before each gunicorn scaling run (default {EXTRAS_WARMUP:g})",
    )
    parser.add_argument(
        "--instructions",
        type=int,
        default=1024,
        metavar="N",
        help="requests per variant counted under valgrind (default 1024; 0 skips the count)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results file (default bench/RESULTS.md)")
    args = parser.parse_args(argv)
    if min(args.rounds, args.duration, args.burst, args.connections, args.threads, args.extras_duration) < 1:
        parser.error("--rounds, --duration, --burst, --connections, --threads and --extras-duration must be at least 1")
    if args.duration < args.burst:
        parser.error("--duration must be at least one --burst")
    return args


def run_extras(result: report.Report, redis: RedisServer, options: runner.Options) -> None:
    """Scaling, scrape, limiter and profiles; one that fails is reported and the others still run."""
    statuses = {s.variant.name: s.status for s in result.summaries}

    def attempt(what: str, step: Callable[[], None]) -> None:
        try:
            step()
        except (RuntimeError, OSError, Unavailable, subprocess.SubprocessError) as exc:
            runner.log(f"{what} failed: {exc}")
            result.failures.append(f"{what}: {type(exc).__name__}: {exc}")

    def scaling() -> None:
        result.scaling = extras.gunicorn_scaling(redis, options, statuses)

    def scrape() -> None:
        result.scrapes = extras.metrics_scrape(redis, options, statuses)

    def limiter() -> None:
        result.limiter = extras.limiter_cost(options, result.summaries)

    attempt("gunicorn scaling", scaling)
    attempt("/metrics scrape", scrape)
    attempt("limiter vs EVALSHA", limiter)

    def overloaded() -> None:
        result.overload = overload.measure(redis.url, duration=options.duration, pin=options.pin)

    if "opskit-overload" in statuses:
        attempt("overload", overloaded)
    unmet = report.unmet_targets(result)
    bare_row = result.row("bare")
    baseline: list[tuple[str, float]] = []
    if unmet and bare_row is not None:

        def profile_bare() -> None:
            runner.log("profiling bare (baseline)")
            baseline.append((profile.record(BY_NAME["bare"], redis, options), bare_row.cpu_us))

        attempt("profile of bare", profile_bare)
    for name in unmet:

        def profile_it(name: str = name) -> None:
            runner.log(f"profiling {name}")
            row = result.row(name)
            stacks = profile.record(BY_NAME[name], redis, options)
            cpu_us = row.cpu_us if row is not None else 0.0
            result.profiles[name] = profile.summarize(stacks, cpu_us, baseline[0] if baseline else None)

        attempt(f"profile of {name}", profile_it)


def count_instructions(result: report.Report, redis: RedisServer, variants: list[Variant], extra: int) -> None:
    """Instructions per request of every measured variant (skipped, and said so, without valgrind)."""
    if shutil.which("valgrind") is None:
        result.failures.append("instructions per request: valgrind is not installed (scripts/install-tools)")
        return
    measured = [v for v in variants if (row := result.row(v.name)) is not None and row.measured]
    result.instructions = instructions.measure_all(measured, redis, extra, log=runner.log)
    result.instructions_extra = extra


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        variants = select(args.variants)
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    options = runner.Options(
        duration=args.duration,
        burst=args.burst,
        warmup=args.warmup,
        rounds=args.rounds,
        connections=args.connections,
        threads=args.threads,
        pin=(os.cpu_count() or 1) >= 2,
    )
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    host = machine.describe_machine()
    with private_redis(cpu=LOAD_CPU if options.pin else None) as redis:
        summaries = runner.run(variants, redis, options)
        result = report.Report(command.strip(), options, host, summaries)
        if not args.no_extras:
            run_extras(result, redis, replace(options, duration=args.extras_duration, warmup=args.extras_warmup))
        # Last: counting is immune to other work on the machine, the timed runs above are not.
        if args.instructions:
            count_instructions(result, redis, variants, args.instructions)
    host.busy_after = machine.cpu_busy()
    report.write(result, args.output)
    runner.log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
