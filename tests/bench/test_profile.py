"""Summaries of py-spy's collapsed stacks."""

from __future__ import annotations

from bench.profile import summarize

STACKS = """\
main (uvicorn/main.py:10);__call__ (/repo/opskit/middleware.py:40);send (/x/site-packages/uvicorn/h.py:5) 60
main (uvicorn/main.py:10);__call__ (/repo/opskit/middleware.py:40);msg (/repo/opskit/_logging.py:9) 30
main (uvicorn/main.py:10);worker (/x/site-packages/otel/batch.py:3) 10
"""


class TestSummarize:
    """``summarize`` turns py-spy's ``--format raw`` output into shares of the samples."""

    def test_self_and_opskit_inclusive_shares(self) -> None:
        """Leaf frames give self time; opskit frames also get the time of what they call."""
        text = summarize(STACKS)
        assert text.startswith("100 samples")
        assert " 60.0%  send (uvicorn/h.py)" in text
        assert " 30.0%  msg (opskit/_logging.py)" in text
        functions = text.split("opskit functions")[1]
        assert " 90.0%  __call__ (opskit/middleware.py)" in functions
        assert "main (uvicorn/main.py)" not in functions
        assert " 30.0%  opskit/_logging.py" in text.split("opskit modules")[1]

    def test_shares_become_microseconds(self) -> None:
        """Given the CPU time per request, each share is also given in µs per request."""
        text = summarize(STACKS, cpu_us_per_request=200.0)
        assert " 30.0%  ~   60 µs/req  msg (opskit/_logging.py)" in text

    def test_no_samples(self) -> None:
        """Empty output (py-spy saw nothing) says so instead of dividing by zero."""
        assert summarize("") == "no samples"

    def test_growth_against_bare(self) -> None:
        """With bare's samples, the functions whose self time per request grew most come first."""
        bare = "main (uvicorn/main.py:10);send (/x/site-packages/uvicorn/h.py:5) 100\n"
        text = summarize(STACKS, cpu_us_per_request=200.0, baseline=(bare, 100.0))
        growth = text.split("self time against bare (+100 µs/req in all)")[1].splitlines()
        assert growth[1].strip() == "+60.0 µs/req  msg (opskit/_logging.py)"
        assert "+20.0 µs/req  send (uvicorn/h.py)" in growth[2] or "+20.0 µs/req  worker" in growth[2]
