"""Real gunicorn through `opskit serve`: worker sizing, bad values, replaced workers."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.servers import ROOT, Background, free_port, wait_for_port
from tests.serving.processes import OPSKIT, children, events, json_lines, opskit_serve, wait_until

APP = "tests.serving.asgi_apps:plain"

pytestmark = pytest.mark.slow

METRICS_INSTALLED = importlib.util.find_spec("opskit.metrics") is not None


def get(port: int, path: str = "/") -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.status, response.read()


def requests_total(port: int) -> float:
    """The sum of every ``http_requests_total`` sample one scrape of /metrics reports."""
    from prometheus_client.parser import text_string_to_metric_families

    _, body = get(port, "/metrics")
    return sum(
        sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == "http_requests_total"
    )


def assert_workers(process: Background, expected: int) -> None:
    wait_until(lambda: len(children(process.pid)) == expected, what=f"{expected} workers")
    starting = [e for e in events(process) if e.get("event") == "starting"]
    assert starting and starting[0]["workers"] == expected


def fake_cgroup_v2(tmp_path: Path, cpu_max: str) -> Path:
    """A cgroup v2 tree whose root (the process's own cgroup, as under a namespace) has ``cpu_max``."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory\n")
    (root / "cpu.max").write_text(cpu_max + "\n")
    return root


class TestWorkerCount:
    def test_web_concurrency_is_exact(self) -> None:
        """WEB_CONCURRENCY=3 starts exactly 3 workers, which serve requests."""
        with opskit_serve(APP, {"WEB_CONCURRENCY": "3"}) as (process, port):
            assert_workers(process, 3)
            assert get(port) == (200, b"ok")

    def test_workers_per_core_bounded_by_max_workers(self, tmp_path: Path) -> None:
        """WORKERS_PER_CORE=4 on an unlimited cgroup is capped by MAX_WORKERS=3."""
        env = {"WORKERS_PER_CORE": "4", "MAX_WORKERS": "3", "OPSKIT_CGROUP_ROOT": str(tmp_path)}
        with opskit_serve(APP, env) as (process, _):
            assert_workers(process, 3)

    def test_fake_cgroup_quota(self, tmp_path: Path) -> None:
        """A cgroup quota of one CPU at three workers per core gives 3 workers, whatever the host has."""
        root = fake_cgroup_v2(tmp_path, "100000 100000")
        env = {"WORKERS_PER_CORE": "3", "OPSKIT_CGROUP_ROOT": str(root), "OPSKIT_WORKER_MEMORY_MB": "0"}
        with opskit_serve(APP, env) as (process, _):
            assert_workers(process, 3)

    def test_fractional_quota_with_minimum_one(self, tmp_path: Path) -> None:
        """Half a CPU with OPSKIT_MIN_WORKERS=1 runs a single worker."""
        root = fake_cgroup_v2(tmp_path, "50000 100000")
        with opskit_serve(APP, {"OPSKIT_CGROUP_ROOT": str(root), "OPSKIT_MIN_WORKERS": "1"}) as (process, _):
            assert_workers(process, 1)


class TestInvalidValues:
    @pytest.mark.parametrize(
        ("variable", "value"),
        [("WEB_CONCURRENCY", "many"), ("MAX_WORKERS", "0"), ("GRACEFUL_TIMEOUT", "-1"), ("PORT", "http")],
    )
    def test_exit_non_zero_naming_the_variable(self, variable: str, value: str) -> None:
        """A bad value stops `opskit serve` before gunicorn starts, with a JSON line naming the variable."""
        result = subprocess.run(
            [OPSKIT, "serve", APP],
            env={**os.environ, variable: value},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2
        assert result.stdout == ""
        [line] = result.stderr.splitlines()
        assert f"{variable}={value!r}" in line
        assert '"level": "critical"' in line

    def test_plain_gunicorn_config_names_the_variable(self) -> None:
        """With `gunicorn -c` too, a bad value exits 2 with one JSON line naming the variable."""
        argv = [sys.executable, "-m", "gunicorn", "-c", "python:opskit.serving.gunicorn_conf", APP]
        env = {**os.environ, "GRACEFUL_TIMEOUT": "soon"}
        result = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert result.returncode == 2
        [line] = result.stderr.splitlines()
        assert "GRACEFUL_TIMEOUT='soon'" in json.loads(line)["event"]


class TestAppLoadErrors:
    @pytest.mark.parametrize(
        ("app", "code", "needle"),
        [
            ("tests.serving.no_such_module:app", 4, "No module named 'tests.serving.no_such_module'"),
            ("tests.serving.asgi_apps:missing", 4, "missing"),
            ("tests.serving.broken_app:app", 3, "configuration file missing"),
        ],
    )
    def test_exit_with_json_lines_only(self, app: str, code: int, needle: str, tmp_path: Path) -> None:
        """An app that cannot be imported stops the server with gunicorn's exit code; every line is JSON."""
        env = {**os.environ, "WEB_CONCURRENCY": "1", "PORT": str(free_port()), "TMPDIR": str(tmp_path)}
        result = subprocess.run([OPSKIT, "serve", app], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == code
        lines = json_lines(result.stdout) + json_lines(result.stderr)
        [failure] = [line for line in lines if line["event"] == "app failed to load"]
        assert failure["level"] == "critical" and failure["app"] == app
        assert needle in json.dumps(failure["exception"])


class TestWorkerReplacement:
    def test_killed_worker_is_replaced(self) -> None:
        """A worker killed with SIGKILL is replaced by a new one and the service keeps answering."""
        with opskit_serve(APP, {"WEB_CONCURRENCY": "2"}) as (process, port):
            assert_workers(process, 2)
            victim = min(children(process.pid))
            os.kill(victim, signal.SIGKILL)
            wait_until(
                lambda: victim not in children(process.pid) and len(children(process.pid)) == 2,
                what="a replacement worker",
            )
            assert get(port) == (200, b"ok")
            assert process.proc.poll() is None

    @pytest.mark.skipif(not METRICS_INSTALLED, reason="needs opskit.metrics")
    def test_metrics_survive_a_killed_worker(self) -> None:
        """Request counts stay exact across workers when one is SIGKILLed: nothing lost, nothing doubled."""
        with opskit_serve("tests.serving.asgi_apps:instrumented", {"WEB_CONCURRENCY": "2"}) as (process, port):
            assert_workers(process, 2)
            for _ in range(20):
                assert get(port) == (200, b"ok")
            assert requests_total(port) == 20
            victim = min(children(process.pid))
            os.kill(victim, signal.SIGKILL)
            wait_until(
                lambda: victim not in children(process.pid) and len(children(process.pid)) == 2,
                what="a replacement worker",
            )
            for _ in range(10):
                assert get(port) == (200, b"ok")
            assert requests_total(port) == 30
            assert requests_total(port) == 30


class TestMaxRequests:
    def test_worker_recycled_without_failed_requests(self) -> None:
        """MAX_REQUESTS=3 replaces the only worker after 3 requests; every request still gets 200."""
        with opskit_serve(APP, {"WEB_CONCURRENCY": "1", "MAX_REQUESTS": "3"}) as (process, port):
            assert_workers(process, 1)
            [first] = children(process.pid)
            assert [get(port)[0] for _ in range(7)] == [200] * 7
            wait_until(lambda: len(children(process.pid) - {first}) == 1, what="a recycled worker")
            assert any(str(e.get("event")).startswith("Maximum request limit") for e in events(process))


class TestGunicornConfigModule:
    def test_plain_gunicorn_with_the_shipped_config(self, tmp_path: Path) -> None:
        """`gunicorn -c deploy/gunicorn.conf.py` runs opskit's configuration: env-sized workers, JSON logs."""
        port = free_port()
        argv = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"), APP]
        env = {"WEB_CONCURRENCY": "2", "BIND": f"127.0.0.1:{port}", "TMPDIR": str(tmp_path)}
        process = Background(argv, env=env, cwd=ROOT)
        try:
            wait_for_port(port)
            assert_workers(process, 2)
            assert get(port) == (200, b"ok")
            assert process.stop(signal.SIGTERM, timeout=20) == 0
            assert any(e.get("event", "").startswith("Starting gunicorn") for e in events(process))
        finally:
            process.close()
