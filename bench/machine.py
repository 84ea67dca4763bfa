"""What the numbers were measured on: CPU, load from other work, tools and package versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = (
    "opskit-asgi",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "gunicorn",
    "uvicorn-worker",
    "structlog",
    "prometheus-client",
    "opentelemetry-sdk",
    "prometheus-fastapi-instrumentator",
    "asgi-correlation-id",
    "opentelemetry-instrumentation-fastapi",
    "slowapi",
    "limits",
    "redis",
    "hiredis",
)
# Share of CPU time other work used while the harness was idle, above which the run is "busy".
BUSY_THRESHOLD = 0.10


def cpu_busy(seconds: float = 2.0) -> float:
    """Share of all CPUs' time spent not idle over ``seconds`` (read from /proc/stat)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


@dataclass
class Machine:
    """What the numbers were measured on."""

    cpu_model: str
    cores: int
    kernel: str
    python: str
    busy_before: float
    busy_after: float = 0.0
    tools: dict[str, str] = field(default_factory=dict)

    @property
    def busy(self) -> bool:
        return max(self.busy_before, self.busy_after) > BUSY_THRESHOLD


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "not found"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else "?"


def describe_machine() -> Machine:
    """CPU model and count, kernel, Python, tools, and how busy the CPUs are right now."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    tools = {
        "wrk": _first_line(["wrk", "-v"]).split(" Copyright")[0].removeprefix("wrk "),
        "redis-server": _first_line(["redis-server", "--version"]).split(" sha=")[0],
    }
    return Machine(model, os.cpu_count() or 0, platform.release(), platform.python_version(), cpu_busy(), tools=tools)


def versions() -> dict[str, str]:
    """Installed versions of opskit, the server stack and the peers."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def git_commit() -> str:
    """The checkout's commit, short form."""
    return _first_line(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"])
