"""Verdicts on the targets."""

from __future__ import annotations

from bench.instructions import InstructionCount
from bench.machine import Machine
from bench.report import Report, targets_table
from bench.runner import Measurement, Options, Status, Summary, summarize
from bench.servers import RedisCalls
from bench.variants import BY_NAME
from bench.wrk import WrkResult

NO_REDIS = RedisCalls(0, 0)


def row(name: str, rps: float, p99: int) -> Summary:
    result = WrkResult(int(rps * 10), 10_000_000, 0, 0, 0, 0, 0, 1000, p99, 1000.0)
    return Summary(BY_NAME[name], Status("ok"), [Measurement(name, 0, result, NO_REDIS)])


def report(*rows: Summary) -> Report:
    summaries = [row("bare", 10_000, 10_000), *rows]
    summarize(summaries)
    return Report("python -m bench", Options(), Machine("cpu", 2, "k", "3.11", 0.0), summaries)


class TestTargetsTable:
    """Each target row says pass, or miss and by how much."""

    def test_pass_and_miss(self) -> None:
        """0.98 passes the request-ID goal; 0.50 misses the metrics goal, with the µs over budget."""
        lines = targets_table(report(row("opskit-request-id", 9_800, 10_000), row("opskit-metrics", 5_000, 10_000)))
        request_id = next(line for line in lines if line.startswith("| request ID alone"))
        metrics = next(line for line in lines if line.startswith("| metrics alone"))
        assert "| 0.98 |" in request_id and "**pass**" in request_id
        # bare 100 µs; goal 0.90 -> budget 11 µs; 0.50 adds 100 µs -> over by 89 µs.
        assert "**miss**: ratio short by 0.40: adds 100 µs/req, budget 11 µs (over by 89 µs)" in metrics

    def test_all_on_needs_the_p99_bound_too(self) -> None:
        """A fast enough all-on run whose p99 is over twice bare's still misses."""
        lines = targets_table(report(row("opskit-all", 8_000, 25_000)))
        all_on = next(line for line in lines if line.startswith("| everything on"))
        assert "**miss**: p99 2.5x bare (max 2x)" in all_on

    def test_unmeasured_target_is_not_built_yet(self) -> None:
        """A target whose variant was reported n/a says so rather than pass or miss."""
        missing = Summary(BY_NAME["opskit-tracing"], Status("n/a", "not built yet"))
        lines = targets_table(report(missing))
        tracing = next(line for line in lines if line.startswith("| tracing alone"))
        assert "n/a (not built yet)" in tracing

    def test_a_limiter_failing_open_is_called_out(self) -> None:
        """A limiter run in which half the requests never reached Redis carries that warning in its verdict."""
        limiter = row("opskit-ratelimit", 9_000, 10_000)
        requests = limiter.measurements[0].result.requests
        limiter.measurements[0] = Measurement(
            "opskit-ratelimit", 0, limiter.measurements[0].result, RedisCalls(requests * 2, requests // 2)
        )
        lines = targets_table(report(limiter))
        limit_row = next(line for line in lines if line.startswith("| Redis limiter alone"))
        assert "**pass** (the limiter skipped Redis for 50% of requests, failing open" in limit_row


class TestInstructionRatio:
    """The instruction-count column next to the wall-clock verdicts."""

    def test_ratio_and_its_own_pass_or_miss(self) -> None:
        """bare 500k and request ID 520k instructions per request: ratio 0.962, under the 0.97 goal."""
        result = report(row("opskit-request-id", 9_800, 10_000))
        result.instructions = [InstructionCount("bare", 500_000), InstructionCount("opskit-request-id", 520_000)]
        request_id = next(line for line in targets_table(result) if line.startswith("| request ID alone"))
        assert "| 0.962 (miss) |" in request_id
        assert result.instruction_ratio("opskit-metrics") is None
