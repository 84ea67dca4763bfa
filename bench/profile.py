"""Where a variant's time goes: py-spy samples the server under wrk load; a summary by function."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench import wrk
from bench.processes import RedisServer
from bench.runner import Options
from bench.servers import LOAD_CPU, app_server
from bench.variants import Variant

TOP = 15
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    """The py-spy executable next to this Python, or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _short(file: str) -> str:
    for marker in ("site-packages/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
    for root in ("/opskit/", "/bench/"):
        if root in file:
            file = root.strip("/") + "/" + file.split(root, 1)[1]
    return file


def _name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    return f"{match['func']} ({_short(match['file'])})"


def _module(name: str) -> str | None:
    """``opskit/tracing/_component.py`` for a frame of opskit's, else None."""
    inside = name.rsplit("(", 1)[-1].rstrip(")")
    return inside if inside.startswith("opskit/") else None


@dataclass
class Samples:
    """py-spy samples of one server: self and inclusive counts per function, and per opskit module."""

    total: int = 0
    own: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    modules: Counter[str] = field(default_factory=Counter)


def parse(collapsed: str) -> Samples:
    """Read py-spy's ``--format raw`` output (one ``frame;frame;... count`` line per stack)."""
    samples = Samples()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_name(frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        samples.total += count
        samples.own[frames[-1]] += count
        for name in set(frames):
            samples.inclusive[name] += count
        for module in {m for m in map(_module, frames[1:]) if m}:
            samples.modules[module] += count
    return samples


def summarize(
    collapsed: str, cpu_us_per_request: float = 0.0, baseline: tuple[str, float] | None = None, top: int = TOP
) -> str:
    """Self and inclusive sample shares from py-spy's ``--format raw`` output.

    With the variant's server CPU time per request, shares are also shown as µs per request; with a
    ``baseline`` (bare's samples and CPU time per request), the functions whose self time grew most.
    """
    samples = parse(collapsed)
    total = samples.total
    if not total:
        return "no samples"

    def share(n: int) -> str:
        text = f"  {n / total:6.1%}"
        return text + (f"  ~{n / total * cpu_us_per_request:5.0f} µs/req" if cpu_us_per_request else "")

    lines = [f"{total} samples of the server process under load (on-CPU only)"]
    if cpu_us_per_request:
        lines.append(f"µs/req = share x the {cpu_us_per_request:.0f} µs of server CPU per request measured above")
    lines += ["", "self time:"]
    lines += [f"{share(n)}  {name}" for name, n in samples.own.most_common(top)]
    lines += ["", "opskit modules below the middleware's own frame (each with what it calls):"]
    below = [(m, n) for m, n in samples.modules.most_common() if m != "opskit/middleware.py"][:top]
    lines += [f"{share(n)}  {module}" for module, n in below] or ["  (no opskit frame sampled)"]
    mine = [(name, n) for name, n in samples.inclusive.most_common() if "(opskit/" in name][:top]
    lines += ["", "opskit functions (each with what it calls):"]
    lines += [f"{share(n)}  {name}" for name, n in mine] or ["  (no opskit frame sampled)"]
    if baseline is not None and cpu_us_per_request and baseline[1]:
        lines += ["", *growth(samples, cpu_us_per_request, parse(baseline[0]), baseline[1], top)]
    return "\n".join(lines)


def growth(samples: Samples, cpu_us: float, bare: Samples, bare_cpu_us: float, top: int) -> list[str]:
    """Functions whose self time per request grew most against bare's (new ones included)."""
    if not bare.total:
        return []

    def us(counter: Counter[str], total: int, per_request: float, name: str) -> float:
        return counter[name] / total * per_request

    deltas = {
        name: us(samples.own, samples.total, cpu_us, name) - us(bare.own, bare.total, bare_cpu_us, name)
        for name in set(samples.own) | set(bare.own)
    }
    biggest = sorted(deltas.items(), key=lambda item: item[1], reverse=True)[:top]
    return [
        f"self time against bare ({cpu_us - bare_cpu_us:+.0f} µs/req in all): largest increases",
        *(f"  {delta:+6.1f} µs/req  {name}" for name, delta in biggest),
    ]


def record(variant: Variant, redis: RedisServer, options: Options, seconds: float = 5.0) -> str:
    """Run ``variant`` under wrk and sample it with py-spy for ``seconds``; py-spy's raw output.

    Raises :class:`RuntimeError` when py-spy is missing or fails.
    """
    spy = py_spy()
    if spy is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy, part of the bench extra)")
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as work, app_server(variant, redis.url) as server:
        out = Path(work) / "stacks.txt"
        url = server.url + "/items/1"
        load = threading.Thread(
            target=wrk.run,
            args=(url,),
            kwargs={
                "duration": seconds + 2,
                "connections": options.connections,
                "threads": options.threads,
                "cpu": LOAD_CPU if options.pin else None,
            },
        )
        load.start()
        try:
            done = subprocess.run(
                [spy, "record", "--pid", str(server.process.pid), "--duration", str(int(seconds)), "--rate", "250"]
                + ["--format", "raw", "--output", str(out), "--nonblocking"],
                capture_output=True,
                text=True,
                timeout=seconds + 60,
            )
        finally:
            load.join()
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"py-spy failed: {(done.stderr or done.stdout).strip()[-500:]}")
        return out.read_text()
