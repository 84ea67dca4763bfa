"""Reading wrk's results."""

from __future__ import annotations

import pytest

from bench import wrk

LINE = (
    'BENCH_JSON {"requests": 5000, "duration_us": 2000000, "connect_errors": 0, "read_errors": 1, '
    '"write_errors": 0, "status_errors": 2, "timeouts": 3, "p50_us": 900, "p99_us": 4000, "mean_us": 1000.5}'
)


class TestParse:
    """``wrk.parse`` reads the line the Lua ``done`` hook prints."""

    def test_reads_the_numbers_among_other_output(self) -> None:
        """The JSON line is found among wrk's own text; req/s and error totals derive from it."""
        result = wrk.parse("Running 2s test @ http://x\n  1 threads\n" + LINE + "\nRequests/sec: 2500\n")
        assert result.requests == 5000 and result.p50_us == 900 and result.p99_us == 4000
        assert result.rps == 2500.0
        assert result.errors == 6

    def test_no_result_line_is_an_error(self) -> None:
        """Output without the hook's line (wrk failed) raises instead of reporting zeros."""
        with pytest.raises(RuntimeError, match="wrk printed no result"):
            wrk.parse("unable to connect to 127.0.0.1:1 Connection refused")
