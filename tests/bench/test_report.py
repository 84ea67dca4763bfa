"""Verdicts on the targets."""

from __future__ import annotations

from bench.instructions import InstructionCount
from bench.machine import Machine
from bench.report import Report, judge, render, targets_table, unmet_targets, variants_table
from bench.runner import Burst, Options, Pair, Session, Status, Summary, summarize
from bench.servers import RedisCalls
from bench.variants import BY_NAME
from bench.wrk import WrkResult

NO_REDIS = RedisCalls(0, 0)
BARE_RPS = 10_000


def burst(name: str, rps: float, p99: int) -> Burst:
    result = WrkResult(round(rps), 1_000_000, 0, 0, 0, 0, 0, 1000, p99, 1000.0)
    return Burst(name, 0, result, 100e-6 * round(rps) * BARE_RPS / rps if rps else 0.0)


def row(name: str, *rps: float, p99: int = 10_000, redis: RedisCalls = NO_REDIS) -> Session:
    """A session of ``name`` beside bare at 10,000 req/s, one pair per given req/s; CPU time tracks req/s."""
    pairs = [Pair(burst("bare", BARE_RPS, 10_000), burst(name, r, p99), True) for r in rps]
    return Session(name, 0, pairs, redis)


def report(*sessions: Session | Summary) -> Report:
    bare = Summary(BY_NAME["bare"], Status("ok"))
    summaries = [bare]
    for item in sessions:
        if isinstance(item, Summary):
            summaries.append(item)
            continue
        summary = Summary(BY_NAME[item.variant], Status("ok"))
        summary.add(item)
        bare.add(item, as_bare=True)
        summaries.append(summary)
    summarize(summaries)
    return Report("python -m bench", Options(), Machine("cpu", 2, "k", "3.11", 0.0), summaries)


def line(lines: list[str], start: str) -> str:
    return next(text for text in lines if text.startswith(start))


class TestJudge:
    """pass, miss, or within noise when the goal lies inside the spread."""

    def test_goal_inside_the_spread_is_within_noise(self) -> None:
        """A median under the goal is no miss while the goal is inside the IQR, and a median over it no pass."""
        assert judge(0.95, (0.93, 0.98), 0.97) == "within noise"
        assert judge(0.99, (0.96, 1.01), 0.97) == "within noise"

    def test_goal_outside_the_spread_is_pass_or_miss(self) -> None:
        """Outside the IQR the median decides; with no spread it always does."""
        assert judge(0.90, (0.88, 0.92), 0.97) == "miss"
        assert judge(0.99, (0.98, 1.00), 0.97) == "pass"
        assert judge(0.97, None, 0.97) == "pass"


class TestTargetsTable:
    """Each target row says pass, miss and by how much, or within noise."""

    def test_pass_and_miss(self) -> None:
        """0.98 passes the request-ID goal; 0.50 misses the metrics goal (0.95), with the µs over budget."""
        lines = targets_table(report(row("opskit-request-id", 9_800), row("opskit-metrics", 5_000)))
        request_id = line(lines, "| request ID alone")
        metrics = line(lines, "| metrics alone")
        assert "| 0.98 (0.98–0.98) |" in request_id and "**pass**" in request_id
        # bare 100 µs; goal 0.95 -> budget 5 µs; 0.50 adds 100 µs -> over by 95 µs.
        assert "**miss**: ratio short by 0.45: adds 100 µs/req, budget 5 µs (over by 95 µs)" in metrics
        assert "| 0.50 (miss) |" in metrics

    def test_goal_inside_the_spread_is_within_noise(self) -> None:
        """Pair ratios 0.91 to 0.97 around a median of 0.94: the 0.95 goal is neither passed nor missed."""
        lines = targets_table(report(row("opskit-request-id", 9_100, 9_300, 9_400, 9_600, 9_700)))
        request_id = line(lines, "| request ID alone")
        assert "| 0.94 (0.93–0.96) |" in request_id
        assert "**within noise**: goal 0.95 inside the pair ratios' IQR 0.93–0.96" in request_id
        assert "miss" not in request_id and "| 0.94 (within noise) |" in request_id

    def test_all_on_needs_the_p99_bound_too(self) -> None:
        """A fast enough all-on run whose p99 is over 1.5 times bare's still misses."""
        all_on = line(targets_table(report(row("opskit-all", 8_000, p99=25_000))), "| everything on")
        assert "**miss**: p99 2.5x bare (max 1.5x)" in all_on

    def test_unmeasured_target_is_not_built_yet(self) -> None:
        """A target whose variant was reported n/a says so rather than pass or miss."""
        missing = Summary(BY_NAME["opskit-tracing"], Status("n/a", "feature unavailable"))
        tracing = line(targets_table(report(row("opskit-metrics", 9_500), missing)), "| tracing alone")
        assert "n/a (feature unavailable)" in tracing

    def test_a_limiter_failing_open_is_called_out(self) -> None:
        """A limiter run in which half the requests never reached Redis carries that warning in its verdict."""
        limiter = row("opskit-ratelimit", 9_000, redis=RedisCalls(9_000 * 2, 9_000 // 2))
        limit_row = line(targets_table(report(limiter)), "| Redis limiter alone")
        assert "**pass** (the limiter skipped Redis for 50% of requests, failing open" in limit_row


class TestUnmetTargets:
    """The targets profiled after the run: those not clearly met."""

    def test_misses_and_within_noise_but_not_passes(self) -> None:
        """A miss and a within-noise verdict are listed, a clear pass is not."""
        result = report(
            row("opskit-request-id", 9_300, 9_500, 9_600, 9_800, 9_900),
            row("opskit-metrics", 5_000),
            row("opskit-tracing", 9_000),
        )
        assert unmet_targets(result) == ["opskit-request-id", "opskit-metrics"]


class TestVariantsTable:
    """The all-variants table carries each ratio's spread."""

    def test_ratio_iqr_column(self) -> None:
        """A variant's row shows the IQR of its pair ratios; bare's, having none, a dash."""
        lines = variants_table(report(row("peer-otel", 3_000, 3_200, 3_400)))
        assert line(lines, "| bare |").split("|")[5].strip() == "–"
        assert line(lines, "| peer-otel |").split("|")[5].strip() == "0.31–0.33"


class TestMethod:
    """The method text states the burst design with the run's own numbers."""

    def test_method_names_pairs_bursts_and_rounds(self) -> None:
        """Default options: 4 pairs of 1 s bursts per session, 5 rounds, 20 pairs per variant."""
        text = render(report(row("peer-otel", 3_000)))
        assert "4 pairs of 1 s bursts" in text and "Rounds: 5" in text and "20 pairs (20 s measured)" in text
        assert "`wrk -t1 -c64 -d1s --latency`" in text


class TestInstructionRatio:
    """The instruction-count column next to the wall-clock verdicts."""

    def test_ratio_and_its_own_pass_or_miss(self) -> None:
        """bare 500k and request ID 540k instructions per request: ratio 0.926, under the 0.95 goal."""
        result = report(row("opskit-request-id", 9_800))
        result.instructions = [InstructionCount("bare", 500_000), InstructionCount("opskit-request-id", 540_000)]
        request_id = line(targets_table(result), "| request ID alone")
        assert "| 0.926 (miss) |" in request_id
        assert result.instruction_ratio("opskit-metrics") is None
