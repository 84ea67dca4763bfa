"""Where a variant's time goes: py-spy samples the server under wrk load; a summary by function."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from bench import wrk
from bench.runner import Options
from bench.servers import LOAD_CPU, app_server
from bench.variants import Variant
from tests.servers import RedisServer

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


def summarize(collapsed: str, cpu_us_per_request: float = 0.0, top: int = TOP) -> str:
    """Self and inclusive sample shares from py-spy's ``--format raw`` output.

    With the variant's server CPU time per request, shares are also shown as µs per request.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_name(frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
        for module in {m for m in map(_module, frames[1:]) if m}:
            modules[module] += count
    if not total:
        return "no samples"

    def share(n: int) -> str:
        text = f"  {n / total:6.1%}"
        return text + (f"  ~{n / total * cpu_us_per_request:5.0f} µs/req" if cpu_us_per_request else "")

    lines = [f"{total} samples of the server process under load (on-CPU only)"]
    if cpu_us_per_request:
        lines.append(f"µs/req = share x the {cpu_us_per_request:.0f} µs of server CPU per request measured above")
    lines += ["", "self time:"]
    lines += [f"{share(n)}  {name}" for name, n in own.most_common(top)]
    lines += ["", "opskit modules below the middleware's own frame (each with what it calls):"]
    below = [(m, n) for m, n in modules.most_common() if m != "opskit/middleware.py"][:top]
    lines += [f"{share(n)}  {module}" for module, n in below] or ["  (no opskit frame sampled)"]
    mine = [(name, n) for name, n in inclusive.most_common() if "(opskit/" in name][:top]
    lines += ["", "opskit functions (each with what it calls):"]
    lines += [f"{share(n)}  {name}" for name, n in mine] or ["  (no opskit frame sampled)"]
    return "\n".join(lines)


def profile(
    variant: Variant, redis: RedisServer, options: Options, cpu_us_per_request: float = 0.0, seconds: float = 5.0
) -> str:
    """Run ``variant`` under wrk and sample it with py-spy for ``seconds``; the summary text."""
    spy = py_spy()
    if spy is None:
        return "py-spy is not installed (pip install py-spy, part of the bench extra)"
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
            return f"py-spy failed: {(done.stderr or done.stdout).strip()[-500:]}"
        return summarize(out.read_text(), cpu_us_per_request)
