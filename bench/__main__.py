"""``python -m bench``: measure every variant and write bench/RESULTS.md."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench import extras, profile, report, runner
from bench.servers import LOAD_CPU, private_redis
from bench.variants import BY_NAME, select

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "RESULTS.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--variants",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=None,
        help=f"comma-separated subset (bare is always added); known: {', '.join(BY_NAME)}",
    )
    parser.add_argument("--no-extras", action="store_true", help="skip gunicorn scaling, scrape and limiter runs")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results file (default bench/RESULTS.md)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration < 1 or args.connections < 1 or args.threads < 1:
        parser.error("--rounds, --duration, --connections and --threads must be at least 1")
    return args


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
    machine = report.describe_machine()
    with private_redis(cpu=LOAD_CPU if options.pin else None) as redis:
        summaries = runner.run(variants, redis, options)
        result = report.Report(command.strip(), options, machine, summaries)
        if not args.no_extras:
            statuses = {s.variant.name: s.status for s in summaries}
            result.scaling = extras.gunicorn_scaling(redis, options, statuses)
            result.scrapes = extras.metrics_scrape(redis, options, statuses)
            result.limiter = extras.limiter_cost(options, summaries)
            for name in report.missed_targets(result):
                runner.log(f"profiling {name}")
                result.profiles[name] = profile.profile(BY_NAME[name], redis, options)
    machine.busy_after = report.cpu_busy()
    report.write(result, args.output)
    runner.log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
