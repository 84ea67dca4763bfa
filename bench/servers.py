"""The processes a benchmark runs: the app under uvicorn or gunicorn, and a private Redis."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.apps import UNAVAILABLE_MARK
from bench.processes import Background, RedisServer, free_port, wait_for_port, which
from bench.variants import NEVER_REJECTING_LIMIT, Variant

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU = 0
LOAD_CPU = 1
LIMITER_TIMEOUT = "1.0"


class Unavailable(Exception):
    """The variant cannot be built on this checkout (its feature is not there yet)."""


def pin(pid: int, cpu: int) -> None:
    """Move every thread of ``pid`` to ``cpu``."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), {cpu})


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_jiffies(cpu: int) -> tuple[int, int]:
    """(busy, total) jiffies of one CPU so far, from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            values = [int(x) for x in line.split()[1:]]
            idle = values[3] + values[4]
            return sum(values) - idle, sum(values)
    raise RuntimeError(f"no cpu{cpu} in /proc/stat")


SCRIPT_COMMANDS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})
OWN_COMMANDS = frozenset({"info", "flushall", "config", "script"})


@dataclass(frozen=True)
class RedisCalls:
    """Commands a Redis server has run so far: all of them (script-internal ones included) and scripts."""

    commands: int
    scripts: int

    def __sub__(self, other: RedisCalls) -> RedisCalls:
        return RedisCalls(self.commands - other.commands, self.scripts - other.scripts)


def redis_calls(redis: RedisServer) -> RedisCalls:
    """Counts from ``INFO commandstats``, leaving out the harness's own INFO/FLUSHALL/CONFIG/SCRIPT."""
    commands = scripts = 0
    for line in redis.cli("INFO", "commandstats").splitlines():
        if not line.startswith("cmdstat_"):
            continue
        name, _, stats = line.removeprefix("cmdstat_").partition(":")
        calls = int(stats.split("calls=", 1)[1].split(",", 1)[0])
        if name.split("|", 1)[0] in OWN_COMMANDS:
            continue
        commands += calls
        if name in SCRIPT_COMMANDS:
            scripts += calls
    return RedisCalls(commands, scripts)


def app_env(
    variant: Variant, redis_url: str, span_marker: Path, extra_routes: int = 0, otlp_endpoint: str = ""
) -> dict[str, str]:
    """Environment of a server process running ``variant`` (spans go to ``otlp_endpoint``)."""
    return {
        "BENCH_VARIANT": variant.name,
        "BENCH_REDIS_URL": redis_url,
        "BENCH_SPAN_MARKER": str(span_marker),
        "BENCH_ROUTES": str(extra_routes),
        "OPSKIT_REDIS_URL": redis_url,
        "OPSKIT_RATE_LIMIT": NEVER_REJECTING_LIMIT,
        # A saturated event loop answers late: the default 50 ms would fail some decisions open.
        "OPSKIT_REDIS_TIMEOUT": LIMITER_TIMEOUT,
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_TRACES_EXPORTER": "otlp" if otlp_endpoint and "spans" in variant.evidence else "none",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "bench",
        # OTLP metric pushes every second (the default is a minute): their cost shows within a run.
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "PYTHONPATH": str(ROOT),
    }


@dataclass
class AppServer:
    """A running server process of one variant; its stdout (the access log) goes to a file."""

    variant: Variant
    port: int
    process: Background
    span_marker: Path
    workdir: Path
    closed: bool = field(default=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """One GET request: status, lower-cased headers, body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process (all its threads) has used so far."""
        return process_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        """Graceful stop that also flushes batched spans.

        SIGINT, not SIGTERM: uvicorn re-raises the signal it caught after its shutdown, and only
        SIGINT's default action (KeyboardInterrupt) lets ``atexit`` hooks such as the tracer
        provider's flush run.
        """
        self.process.stop(signal.SIGINT, timeout=15)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.process.close()


def _wait_started(server: AppServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        code = server.process.proc.poll()
        if code is not None:
            err = server.process.stderr()
            if UNAVAILABLE_MARK in err:
                reason = err.split(UNAVAILABLE_MARK, 1)[1].strip().splitlines()[0]
                raise Unavailable(reason)
            tail = " | ".join(err.strip().splitlines()[-3:])
            raise Unavailable(f"server exited with {code}: {tail}")
        try:
            server.get("/items/0")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{server.variant.name} did not answer within {timeout}s") from None
            time.sleep(0.05)


@contextlib.contextmanager
def app_server(
    variant: Variant,
    redis_url: str,
    *,
    workers: int = 0,
    extra_routes: int = 0,
    env: dict[str, str] | None = None,
    pin_cpu: bool = True,
    startup_timeout: float = 60.0,
    wrapper: Sequence[str] = (),
) -> Iterator[AppServer]:
    """Serve ``variant``: ``workers == 0`` means uvicorn with one worker pinned to CPU 0,
    otherwise gunicorn with that many uvicorn workers, not pinned. ``wrapper`` prefixes the
    uvicorn command (``valgrind ...``)."""
    port = free_port()
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-{variant.name}-")))
        marker = workdir / "spans-exported"
        exports = variant.evidence & {"spans", "otlp"}
        endpoint = stack.enter_context(otlp_receiver(marker)) if exports else ""
        full_env = {**app_env(variant, redis_url, marker, extra_routes, endpoint), **(env or {})}
        if workers:
            multiproc = workdir / "prometheus"
            multiproc.mkdir()
            full_env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
            argv = [
                sys.executable,
                "-m",
                "gunicorn",
                "-k",
                "uvicorn_worker.UvicornWorker",
                "-w",
                str(workers),
                "-b",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
                "bench.apps:create()",
            ]
        else:
            pinning = [which("taskset"), "-c", str(SERVER_CPU)] if pin_cpu else []
            argv = [
                *pinning,
                *wrapper,
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "bench.apps:create",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
            ]
        server = AppServer(variant, port, Background(argv, env=full_env, cwd=ROOT), marker, workdir)
        stack.callback(server.close)
        _wait_started(server, startup_timeout)
        yield server


@contextlib.contextmanager
def otlp_receiver(marker: Path, cpu: int | None = LOAD_CPU) -> Iterator[str]:
    """A real OTLP/HTTP receiver (``bench.receiver``) pinned to ``cpu``; yields its endpoint URL."""
    port = free_port()
    pinning = [which("taskset"), "-c", str(cpu)] if cpu is not None else []
    process = Background([*pinning, sys.executable, "-m", "bench.receiver", str(port), str(marker)], cwd=ROOT)
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.close()


@contextlib.contextmanager
def private_redis(cpu: int | None = LOAD_CPU) -> Iterator[RedisServer]:
    """A private redis-server pinned to ``cpu`` (the load generator's: Redis stands for another host)."""
    server = RedisServer()
    try:
        if cpu is not None and server.process is not None:
            pin(server.process.pid, cpu)
        yield server
    finally:
        server.close()


def redis_benchmark_evalsha(
    redis: RedisServer, script: str, args: Sequence[str], *, requests: int, clients: int, cpu: int | None
) -> float:
    """EVALSHA calls per second that ``redis-benchmark`` (pinned to ``cpu``) gets from ``redis``."""
    sha = redis.cli("SCRIPT", "LOAD", script).strip()
    pinning = [which("taskset"), "-c", str(cpu)] if cpu is not None else []
    argv = [
        *pinning,
        which("redis-benchmark"),
        "-p",
        str(redis.port),
        "-c",
        str(clients),
        "-n",
        str(requests),
        "--csv",
        "EVALSHA",
        sha,
        "1",
        "bench:bucket",
        *args,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True)
    for line in done.stdout.splitlines():
        cells = [cell.strip('"') for cell in line.split(",")]
        if len(cells) > 1 and cells[0].upper().startswith("EVALSHA"):
            return float(cells[1])
    raise RuntimeError(f"redis-benchmark printed no EVALSHA rate:\n{done.stdout}{done.stderr}")
