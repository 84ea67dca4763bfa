"""Run ``wrk`` and read its results as numbers (a Lua ``done`` hook prints them as JSON)."""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.processes import which

_REPORT = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "status_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""

_ROTATE_PATHS = r"""
local n = tonumber(os.getenv("BENCH_WRK_ROUTES") or "1")
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/r" .. (i % n) .. "/items/" .. i)
end
"""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: throughput, latency percentiles and error counts."""

    requests: int
    duration_us: int
    connect_errors: int
    read_errors: int
    write_errors: int
    status_errors: int
    timeouts: int
    p50_us: int
    p99_us: int
    mean_us: float

    @property
    def rps(self) -> float:
        return self.requests / (self.duration_us / 1e6) if self.duration_us else 0.0

    @property
    def errors(self) -> int:
        """Socket errors, timeouts and non-2xx/3xx responses."""
        return self.connect_errors + self.read_errors + self.write_errors + self.status_errors + self.timeouts


def parse(output: str) -> WrkResult:
    """Read the JSON line the report hook printed."""
    for line in output.splitlines():
        if line.startswith("BENCH_JSON "):
            return WrkResult(**json.loads(line.removeprefix("BENCH_JSON ")))
    raise RuntimeError(f"wrk printed no result:\n{output}")


def run(
    url: str,
    *,
    duration: float,
    connections: int,
    threads: int = 1,
    cpu: int | None = None,
    routes: int = 0,
) -> WrkResult:
    """Load ``url`` for ``duration`` seconds; ``routes`` > 0 rotates over ``/r{i}/items/{n}`` paths."""
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as work:
        script = Path(work) / "report.lua"
        script.write_text((_ROTATE_PATHS if routes else "") + _REPORT)
        argv = [
            which("wrk"),
            f"-t{threads}",
            f"-c{max(connections, threads)}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ]
        if cpu is not None:
            argv = [which("taskset"), "-c", str(cpu), *argv]
        env = {"BENCH_WRK_ROUTES": str(routes or 1), "PATH": "/usr/bin:/bin"}
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse(done.stdout)
