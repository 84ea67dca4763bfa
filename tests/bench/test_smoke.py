"""The harness end to end, for one very short round of two burst pairs: it runs, and the results file is well-formed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT

pytestmark = pytest.mark.slow


def run_bench(output: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--duration", "2", "--burst", "1", "--warmup", "0", "--rounds", "1"]
        + ["--extras-duration", "1", "--extras-warmup", "0", "--output", str(output)]
        + ([] if "--instructions" in args else ["--instructions", "0"])
        + list(args),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    return output.read_text()


def table(markdown: str, heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first table under ``heading``, header and rule excluded."""
    lines = markdown.split(heading, 1)[1].splitlines()
    end = next((i for i, line in enumerate(lines[1:]) if line.startswith("## ")), len(lines))
    rows = [line for line in lines[1 : end + 1] if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def number(cell: str) -> float:
    return float(cell.replace(",", "").replace("x", "").replace("+", ""))


class TestMainTable:
    """``python -m bench`` with a subset of variants and no extras."""

    def test_writes_a_row_per_variant_with_numbers(self, tmp_path: Path) -> None:
        """Every chosen variant gets a row, bare first with ratio 1.00; the whole peer stack passes its checks."""
        text = run_bench(tmp_path / "RESULTS.md", "--variants", "peer-stack,opskit-all", "--no-extras")
        assert text.startswith("# Benchmark results")
        assert "## Machine and versions" in text and "## Method" in text
        assert "2 pairs of 1 s bursts" in text
        rows = table(text, "## All variants")
        assert [row[0] for row in rows] == ["bare", "peer-stack", "opskit-all"]
        assert all(len(row) == 12 for row in rows)
        assert rows[0][3] == "1.00" and rows[0][4] == "–"
        for row in rows[:2]:
            assert number(row[2]) > 0 and number(row[3]) > 0 and number(row[6]) >= number(row[5]) > 0
            assert number(row[8]) > 0 and number(row[9]) > 0
            assert row[11].startswith("ok"), row[11]
        # The peer stack's ratio lies within its IQR of the two pairs' ratios.
        low, high = (number(cell) for cell in rows[1][4].split("–"))
        assert 0 < low <= number(rows[1][3]) <= high
        # The peer stack's limiter ran (at least) one Redis script per request.
        assert number(rows[1][10].split()[0]) >= 0.95
        assert rows[2][11].startswith(("ok", "partial (measured without", "n/a (feature unavailable"))

    def test_floors_and_strongest_peers_leave_their_evidence(self, tmp_path: Path) -> None:
        """Each floor and each added peer starts, serves and leaves its feature's trace (an access line,
        /metrics, spans at the real OTLP receiver, one Redis script per request): every row is ok."""
        names = ["floor-access-log", "floor-metrics", "floor-tracing", "floor-ratelimit"]
        names += ["peer-structlog-asgi", "peer-fastapi-limiter", "peer-otel"]
        text = run_bench(tmp_path / "out.md", "--variants", ",".join(names), "--no-extras", "--duration", "1")
        rows = {row[0]: row for row in table(text, "## All variants")}
        for name in names:  # "ok", or "ok, only 98 % reached Redis" when a burst's last requests are cut off
            assert rows[name][11].startswith("ok"), rows[name]
        assert number(rows["floor-ratelimit"][10].split()[0]) >= 0.95
        assert number(rows["peer-fastapi-limiter"][10].split()[0]) >= 0.95

    def test_targets_table_lists_every_target(self, tmp_path: Path) -> None:
        """The targets table has the nine ratio targets, each with a verdict cell."""
        text = run_bench(tmp_path / "out.md", "--variants", "peer-correlation-id", "--no-extras")
        rows = table(text, "## Targets")
        assert [row[0] for row in rows] == [
            "request ID alone",
            "metrics alone",
            "JSON access log alone",
            "tracing alone, 100 % sampled, OTLP export",
            "Redis limiter alone",
            "shared-memory limiter alone",
            "Redis limiter, local shares",
            "runtime health alone",
            "everything on",
        ]
        assert rows[0][6].startswith("peer-correlation-id ")
        assert all(row[3].startswith(("**pass**", "**miss**", "**within noise**", "n/a", "not run")) for row in rows)
        assert all(row[3] for row in rows)

    def test_unknown_variant_is_refused(self, tmp_path: Path) -> None:
        """A misspelt variant name stops the run before anything starts, naming the known ones."""
        done = subprocess.run(
            [sys.executable, "-m", "bench", "--variants", "nope", "--output", str(tmp_path / "x.md")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2
        assert "unknown variants ['nope']" in done.stderr and "peer-stack" in done.stderr
        assert not (tmp_path / "x.md").exists()


class TestExtras:
    """The runs beside the main table: gunicorn scaling, /metrics scrape, limiter vs redis-benchmark."""

    def test_extras_sections_are_written(self, tmp_path: Path) -> None:
        """With the instrumentator chosen, the scaling (bare), scrape and limiter sections all have numbers."""
        text = run_bench(tmp_path / "out.md", "--variants", "peer-instrumentator", "--connections", "8")
        scaling = table(text, "## gunicorn scaling")
        assert [row[0] for row in scaling] == ["bare"]
        assert number(scaling[0][1]) > 0 and number(scaling[0][2]) > 0 and number(scaling[0][3]) > 0
        assert scaling[0][4] == "1.00"
        one, two = (number(cores) for cores in scaling[0][5].split(" / "))
        assert 0.2 < one < 1.5 and 0.2 < two < 2.5  # busy cores of the worker processes, not of gunicorn alone
        assert number(scaling[0][6]) > 0
        scrape = table(text, "## `/metrics` scrape time")
        assert [row[0] for row in scrape] == ["peer-instrumentator"]
        assert number(scrape[0][1]) > 0 and number(scrape[0][4]) > 0
        assert "EVALSHA/s**" in text


class TestInstructions:
    """The valgrind count of instructions per request."""

    def test_counts_are_deterministic_enough_to_see_a_feature(self) -> None:
        """bare and request ID only are counted; the request ID's cost shows as more instructions per request."""
        done = subprocess.run(
            [sys.executable, "-m", "bench.instructions", "--variants", "opskit-request-id", "--requests", "128"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert done.returncode == 0, done.stderr
        counts = {line.split()[0]: number(line.split()[1]) for line in done.stdout.splitlines()}
        assert set(counts) == {"bare", "opskit-request-id"}
        # A FastAPI request costs hundreds of thousands of instructions; the request ID adds about 5 %.
        assert 100_000 < counts["bare"] < 5_000_000
        assert counts["opskit-request-id"] > counts["bare"] * 1.01
