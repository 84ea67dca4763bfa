"""Rounds and the statistics of the main table."""

from __future__ import annotations

import pytest

from bench.runner import Measurement, Status, Summary, rotation, summarize
from bench.servers import RedisCalls
from bench.variants import BY_NAME
from bench.wrk import WrkResult

NO_REDIS = RedisCalls(0, 0)


def result(rps: float, p50: int = 1000, p99: int = 5000, status_errors: int = 0) -> WrkResult:
    return WrkResult(int(rps * 10), 10_000_000, 0, 0, 0, status_errors, 0, p50, p99, float(p50))


class TestRotation:
    """Each round runs every variant once, in an order rotated by the round number."""

    def test_rotates_by_round(self) -> None:
        """Round 0 keeps the order, round 1 starts with the second variant, and so on, wrapping."""
        variants = [BY_NAME["bare"], BY_NAME["peer-otel"], BY_NAME["peer-slowapi"]]
        assert [v.name for v in rotation(variants, 1)] == ["peer-otel", "peer-slowapi", "bare"]
        assert rotation(variants, 3) == variants


class TestSummarize:
    """Medians over rounds, ratios against the same round's bare run."""

    def test_ratio_is_the_median_of_per_round_ratios(self) -> None:
        """A machine slower in one round changes both bare and the variant: the per-round ratio stays."""
        bare = Summary(BY_NAME["bare"], Status("ok"))
        peer = Summary(BY_NAME["peer-otel"], Status("ok"))
        for round_no, (bare_rps, peer_rps) in enumerate([(10_000, 5_000), (4_000, 2_000), (8_000, 4_800)]):
            bare.measurements.append(Measurement("bare", round_no, result(bare_rps, p99=4000), NO_REDIS))
            peer.measurements.append(Measurement("peer-otel", round_no, result(peer_rps, p99=9000), NO_REDIS))
        summarize([bare, peer])
        assert bare.ratio == 1.0
        assert peer.ratio == pytest.approx(0.5)
        assert peer.rps == pytest.approx(4_800)
        assert bare.rps == pytest.approx(8_000)
        # Per round: 100, 250 and 83 µs added; the median is 100.
        assert peer.added_us == pytest.approx(100.0)
        assert peer.p99_us == 9000

    def test_errors_and_redis_commands_are_totalled(self) -> None:
        """Non-2xx answers add up over rounds; Redis commands and script calls are divided by requests."""
        bare = Summary(BY_NAME["bare"], Status("ok"), [Measurement("bare", 0, result(1000), NO_REDIS)])
        slow = Summary(
            BY_NAME["peer-slowapi"],
            Status("ok"),
            [Measurement("peer-slowapi", 0, result(500, status_errors=7), RedisCalls(20_000, 5_000))],
        )
        summarize([bare, slow])
        assert slow.errors == 7
        assert slow.redis_per_request == pytest.approx(4.0)
        assert slow.scripts_per_request == pytest.approx(1.0)

    def test_unmeasured_rows_stay_empty(self) -> None:
        """A variant reported n/a has no numbers."""
        bare = Summary(BY_NAME["bare"], Status("ok"), [Measurement("bare", 0, result(1000), NO_REDIS)])
        missing = Summary(BY_NAME["opskit-tracing"], Status("n/a", "not built yet"))
        summarize([bare, missing])
        assert not missing.measured and missing.rps == 0.0 and missing.ratio == 0.0
