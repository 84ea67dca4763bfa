"""Paired bursts and the statistics of the main table."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import pytest

from bench.runner import (
    Burst,
    Options,
    Pair,
    Session,
    Status,
    Summary,
    drain,
    measure,
    pair_order,
    rotation,
    server_cpu_seconds,
    spread,
    summarize,
)
from bench.servers import RedisCalls
from bench.variants import BY_NAME
from bench.wrk import WrkResult
from tests.servers import Background, RedisServer

NO_REDIS = RedisCalls(0, 0)


def result(rps: float, p50: int = 1000, p99: int = 5000, status_errors: int = 0) -> WrkResult:
    """A one-second burst at ``rps``."""
    return WrkResult(round(rps), 1_000_000, 0, 0, 0, status_errors, 0, p50, p99, float(p50))


def burst(variant: str, rps: float, cpu_us: float = 100.0, p99: int = 5000, status_errors: int = 0) -> Burst:
    requests = round(rps)
    return Burst(variant, 0, result(rps, p99=p99, status_errors=status_errors), cpu_us * requests / 1e6)


def session(
    name: str, pairs: Sequence[tuple[float, float]], redis: RedisCalls = NO_REDIS, round_no: int = 0
) -> Session:
    """A session whose pairs ran at (bare req/s, variant req/s), CPU time per request inversely proportional."""
    return Session(
        name,
        round_no,
        [
            Pair(burst("bare", b, cpu_us=1e6 / b), burst(name, v, cpu_us=1e6 / v), pair_order(i, round_no))
            for i, (b, v) in enumerate(pairs)
        ],
        redis,
    )


def rows(*sessions: Session) -> tuple[Summary, dict[str, Summary]]:
    """bare's row and each variant's, filled from ``sessions`` as the runner does, then summarized."""
    bare = Summary(BY_NAME["bare"], Status("ok"))
    by_name: dict[str, Summary] = {}
    for s in sessions:
        by_name.setdefault(s.variant, Summary(BY_NAME[s.variant], Status("ok"))).add(s)
        bare.add(s, as_bare=True)
    summarize([bare, *by_name.values()])
    return bare, by_name


class TestOptions:
    """The measured seconds per variant per round are split into bursts."""

    def test_pairs_per_session(self) -> None:
        """4 s in 1 s bursts are 4 pairs; 5 s in 2 s bursts round to 2; never fewer than one pair."""
        assert Options(duration=4, burst=1).pairs == 4
        assert Options(duration=5, burst=2).pairs == 2
        assert Options(duration=1, burst=3).pairs == 1


BUSY_THEN_IDLE = """
import time
while time.process_time() < 0.3:
    pass
print("idle", flush=True)
time.sleep(30)
"""


class TestDrain:
    """After a burst, the harness waits for the loaded server to finish the requests left in flight."""

    def test_waits_for_the_work_to_finish(self) -> None:
        """A process busy for 0.3 s of CPU, then asleep: drain returns once that CPU time is spent, not before."""
        process = Background([sys.executable, "-c", BUSY_THEN_IDLE])
        try:
            waited = drain(process.pid, timeout=20)
            assert server_cpu_seconds(process.pid) >= 0.3
            assert waited < 20
        finally:
            process.close()

    def test_a_sleeping_process_is_drained_at_once(self) -> None:
        """A process that does nothing is quiet: drain does not run into its timeout."""
        process = Background([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            assert drain(process.pid, timeout=20) < 20
        finally:
            process.close()


class TestPairOrder:
    """Neither side always goes first."""

    def test_alternates_within_a_session_and_across_rounds(self) -> None:
        """Bare first, then the variant first, ...; round 1 starts where round 0 did not."""
        assert [pair_order(i, 0) for i in range(4)] == [True, False, True, False]
        assert [pair_order(i, 1) for i in range(4)] == [False, True, False, True]

    def test_each_side_first_equally_often_over_two_rounds(self) -> None:
        """With an odd number of pairs per session, two rounds still balance the first place."""
        firsts = [pair_order(i, r) for r in range(2) for i in range(3)]
        assert firsts.count(True) == firsts.count(False) == 3


class TestRotation:
    """Each round runs every variant once, in an order rotated by the round number."""

    def test_rotates_by_round(self) -> None:
        """Round 0 keeps the order, round 1 starts with the second variant, and so on, wrapping."""
        variants = [BY_NAME["opskit-all"], BY_NAME["peer-otel"], BY_NAME["peer-slowapi"]]
        assert [v.name for v in rotation(variants, 1)] == ["peer-otel", "peer-slowapi", "opskit-all"]
        assert rotation(variants, 3) == variants

    def test_nothing_to_rotate(self) -> None:
        """With bare alone there is no variant to pair with it: a round is empty."""
        assert rotation([], 2) == []


class TestPair:
    """One pair's ratios."""

    def test_ratio_cpu_ratio_and_added_time(self) -> None:
        """bare 10,000 req/s at 100 µs, variant 8,000 req/s at 125 µs: 0.8 both ways, 25 µs added."""
        pair = Pair(burst("bare", 10_000, cpu_us=100), burst("opskit-all", 8_000, cpu_us=125), True)
        assert pair.ratio == pytest.approx(0.8)
        assert pair.cpu_ratio == pytest.approx(0.8)
        assert pair.added_us == pytest.approx(25.0)

    def test_an_empty_burst_gives_no_ratio(self) -> None:
        """A bare burst that served nothing yields 0, which the summary leaves out, not a division error."""
        pair = Pair(burst("bare", 0), burst("opskit-all", 8_000), True)
        assert pair.ratio == 0.0 and pair.added_us == 0.0


class TestSpread:
    """The interquartile range of the pair ratios."""

    def test_interquartile_range(self) -> None:
        """Quartiles by the inclusive method: 1..9 spans 3 to 7."""
        assert spread([float(x) for x in range(9, 0, -1)]) == (3.0, 7.0)

    def test_one_value_is_its_own_range(self) -> None:
        """A single pair has no spread to speak of."""
        assert spread([0.8]) == (0.8, 0.8)


class TestSummarize:
    """Ratios are medians of adjacent pairs; each row's own figures are medians of its own bursts."""

    def test_drift_between_pairs_cancels(self) -> None:
        """The machine slows from 10,000 to 5,000 req/s over the session: every pair still says 0.8."""
        speeds = [10_000, 9_000, 7_000, 5_000]
        _, by_name = rows(session("opskit-all", [(s, 0.8 * s) for s in speeds]))
        row = by_name["opskit-all"]
        assert row.ratio == pytest.approx(0.8, abs=1e-3)
        assert row.ratio_spread == pytest.approx((0.8, 0.8), abs=1e-3)
        assert row.cpu_ratio == pytest.approx(0.8, abs=1e-3)

    def test_one_slowed_burst_does_not_move_the_median(self) -> None:
        """Other work halves one bare burst: that pair reads 1.6, the median stays 0.8, the IQR shows the outlier."""
        pairs = [(10_000, 8_000)] * 4 + [(5_000, 8_000)]
        _, by_name = rows(session("opskit-all", pairs))
        row = by_name["opskit-all"]
        assert row.ratio == pytest.approx(0.8)
        assert row.ratio_spread == pytest.approx((0.8, 0.8))
        # The ratio of summed requests would have read 40,000 / 45,000.
        assert row.ratio != pytest.approx(40_000 / 45_000)

    def test_pairs_of_every_round_are_pooled(self) -> None:
        """Two rounds of two pairs: median and IQR are over all four pair ratios."""
        first = session("peer-otel", [(10_000, 5_000), (10_000, 6_000)], round_no=0)
        second = session("peer-otel", [(8_000, 2_400), (8_000, 3_200)], round_no=1)
        _, by_name = rows(first, second)
        row = by_name["peer-otel"]
        assert len(row.pairs) == 4
        assert row.ratio == pytest.approx(0.45)  # median of 0.3, 0.4, 0.5, 0.6
        assert row.ratio_spread == pytest.approx((0.375, 0.525))
        # Per pair 100, 67, 292 and 188 µs added: the median is halfway between 100 and 187.5.
        assert row.added_us == pytest.approx(143.75)

    def test_bare_row_is_its_own_bursts_from_every_session(self) -> None:
        """bare's req/s and p99 are medians over its bursts beside every variant; its ratio is 1 by definition."""
        bare, _ = rows(
            session("peer-otel", [(10_000, 5_000), (9_000, 5_000)]),
            session("opskit-all", [(8_000, 6_000)]),
        )
        assert len(bare.bursts) == 3
        assert bare.rps == pytest.approx(9_000)
        assert bare.ratio == 1.0 and bare.cpu_ratio == 1.0 and bare.ratio_spread is None
        assert bare.added_us == 0.0

    def test_variant_latency_comes_from_its_own_bursts(self) -> None:
        """p99 is the median of the variant's bursts' p99, untouched by bare's."""
        s = Session(
            "peer-otel",
            0,
            [
                Pair(burst("bare", 10_000, p99=1_000), burst("peer-otel", 5_000, p99=p99), True)
                for p99 in (9_000, 7_000, 8_000)
            ],
            NO_REDIS,
        )
        bare, by_name = rows(s)
        assert by_name["peer-otel"].p99_us == 8_000
        assert bare.p99_us == 1_000

    def test_errors_and_redis_commands_are_totalled(self) -> None:
        """Non-2xx answers add up over bursts; a session's Redis calls are divided by the variant's requests."""
        s = Session(
            "peer-slowapi",
            0,
            [Pair(burst("bare", 1_000), burst("peer-slowapi", 500, status_errors=7), True)] * 2,
            RedisCalls(4_000, 1_000),
        )
        bare, by_name = rows(s)
        row = by_name["peer-slowapi"]
        assert row.errors == 14
        assert row.redis_per_request == pytest.approx(4.0)
        assert row.scripts_per_request == pytest.approx(1.0)
        assert bare.redis_per_request == 0.0

    def test_requests_left_in_flight_count_for_redis(self) -> None:
        """Each connection's last request is served after wrk stops: its script call is matched by it, not extra."""
        variant = Burst("peer-slowapi", 0, result(936), 0.5, in_flight=64)
        s = Session("peer-slowapi", 0, [Pair(burst("bare", 1_000), variant, True)], RedisCalls(2_000, 1_000))
        _, by_name = rows(s)
        assert by_name["peer-slowapi"].scripts_per_request == pytest.approx(1.0)
        assert by_name["peer-slowapi"].rps == pytest.approx(936)

    def test_unmeasured_rows_stay_empty(self) -> None:
        """A variant reported n/a has no numbers."""
        missing = Summary(BY_NAME["opskit-tracing"], Status("n/a", "feature unavailable"))
        summarize([missing])
        assert not missing.measured and missing.rps == 0.0 and missing.ratio == 0.0
        assert missing.ratio_spread is None


@pytest.mark.slow
class TestMeasure:
    """One session against real servers: a limiter beside bare."""

    def test_session_of_alternating_pairs(self, redis: RedisServer) -> None:
        """Two pairs, bare first then the limiter first; every script call is matched by a request served."""
        options = Options(duration=2, burst=1, warmup=0, connections=8)
        session = measure(BY_NAME["opskit-ratelimit"], redis, options, round_no=0)
        assert [pair.bare_first for pair in session.pairs] == [True, False]
        for pair in session.pairs:
            assert pair.bare.variant == "bare" and pair.variant.variant == "opskit-ratelimit"
            assert pair.bare.result.requests > 0 and pair.variant.result.requests > 0
            assert pair.bare.server_cpu_s > 0 and pair.variant.server_cpu_s > 0
        served = sum(pair.variant.served for pair in session.pairs)
        answered = sum(pair.variant.result.requests for pair in session.pairs)
        # Requests left in flight may or may not have reached the limiter, answered ones all did.
        assert answered <= session.redis.scripts <= served
