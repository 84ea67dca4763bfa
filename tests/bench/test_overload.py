"""The overload run: its verdicts and section, and the open-loop generator against a real capped worker."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from bench.overload import Outcome, Overload, OverloadRun, closed_loop, offer, section, verdict
from bench.servers import app_server, private_redis
from bench.variants import BY_NAME


def run(cap: str, served_ms: list[float], shed: int = 0, given_up: int = 0, window: float = 1.0) -> OverloadRun:
    outcomes = [Outcome(200, ms / 1000, 0.5) for ms in served_ms]
    outcomes += [Outcome(503, 0.001, 0.5)] * shed + [Outcome(0, 5.0, 5.5)] * given_up
    return OverloadRun(cap, 150.0, window, outcomes)


class TestVerdicts:
    def test_a_capped_run_passes_within_both_goals(self) -> None:
        """p99 within 3x the unloaded p99 and goodput at least 90 % of capacity: pass."""
        result = Overload(capacity_rps=50.0, unloaded_p50=0.02, unloaded_p99=0.025)
        good = run("1", [40.0] * 48, shed=100)
        assert verdict(result, good).startswith("**pass**")

    def test_slow_served_requests_or_low_goodput_miss(self) -> None:
        """Each goal can fail on its own, and says by how much."""
        result = Overload(capacity_rps=50.0, unloaded_p99=0.025)
        assert "p99 4.0x > 3x" in verdict(result, run("auto", [100.0] * 48))
        assert "goodput 40% < 90%" in verdict(result, run("auto", [40.0] * 20))

    def test_goodput_counts_only_what_completed_in_the_window(self) -> None:
        """A request served after the offered window (a drained queue) is no goodput."""
        late = OverloadRun("0", 150.0, 1.0, [Outcome(200, 3.0, 3.5), Outcome(200, 0.02, 0.2)])
        assert late.goodput_rps == 1.0

    def test_without_a_cap_it_says_what_happened(self) -> None:
        result = Overload(capacity_rps=50.0, unloaded_p99=0.025)
        text = verdict(result, run("0", [2500.0] * 48, given_up=100))
        assert text == "no protection: served p99 100x unloaded, 68% given up after 5 s"

    def test_section_has_a_row_per_cap(self) -> None:
        result = Overload(capacity_rps=50.0, unloaded_p50=0.02, unloaded_p99=0.025)
        result.runs = [run("0", [2500.0]), run("1", [40.0]), run("auto", [45.0])]
        lines = section(result)
        assert lines[0].startswith("## Overload")
        assert [line.split("|")[1].strip() for line in lines if line.startswith("| ")][1:] == [
            "no cap",
            "fixed, 1",
            "`auto`",
        ]
        assert section(None) == []


@pytest.mark.slow
class TestAgainstARealWorker:
    def test_a_capped_loop_bound_worker_sheds_over_keep_alive_connections(self) -> None:
        """uvloop, cap 1, a route holding the loop 20 ms, offered about 3x its capacity: some requests are
        served, some shed, no connection breaks (a loaded machine may still see some given up); one caller
        at a time is never shed."""
        env = {"BENCH_BUSY_MS": "20", "BENCH_MAX_IN_FLIGHT": "1", "OPSKIT_LOGGING_ENABLED": "false"}
        with private_redis(cpu=None) as redis, app_server(BY_NAME["opskit-overload"], redis.url, env=env) as server:
            alone = asyncio.run(closed_loop(server.port, 1, 1.0))
            # Settled: uvloop takes one new connection per loop iteration, so the pool fills up first.
            offered = asyncio.run(offer(server.port, 150.0, 1.0, settle=3.0))
        assert {o.status for o in alone} == {200}
        statuses = Counter(o.status for o in offered)
        assert statuses[200] and statuses[503]
        assert set(statuses) <= {200, 503, 0}
