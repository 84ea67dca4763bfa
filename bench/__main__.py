"""``python -m bench``: measure every variant and write bench/RESULTS.md."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench import extras, instructions, machine, profile, report, runner
from bench.servers import LOAD_CPU, Unavailable, private_redis
from bench.variants import BY_NAME, Variant, select
from tests.servers import RedisServer

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "RESULTS.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each measurement")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--variants",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=None,
        help=f"comma-separated subset (bare is always added); known: {', '.join(BY_NAME)}",
    )
    parser.add_argument("--no-extras", action="store_true", help="skip gunicorn scaling, scrape and limiter runs")
    parser.add_argument(
        "--instructions",
        type=int,
        default=1024,
        metavar="N",
        help="requests per variant counted under valgrind (default 1024; 0 skips the count)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results file (default bench/RESULTS.md)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration < 1 or args.connections < 1 or args.threads < 1:
        parser.error("--rounds, --duration, --connections and --threads must be at least 1")
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
    missed = report.missed_targets(result)
    bare_row = result.row("bare")
    baseline: list[tuple[str, float]] = []
    if missed and bare_row is not None:

        def profile_bare() -> None:
            runner.log("profiling bare (baseline)")
            baseline.append((profile.record(BY_NAME["bare"], redis, options), bare_row.cpu_us))

        attempt("profile of bare", profile_bare)
    for name in missed:

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
            run_extras(result, redis, options)
        # Last: counting is immune to other work on the machine, the timed runs above are not.
        if args.instructions:
            count_instructions(result, redis, variants, args.instructions)
    host.busy_after = machine.cpu_busy()
    report.write(result, args.output)
    runner.log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
