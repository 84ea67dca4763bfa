"""Real multi-worker servers (gunicorn, uvicorn --workers): every scrape counts every request once."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from opskit.metrics.store import process_start_time
from tests.metrics.parsing import parse_text
from tests.servers import ROOT, Background, free_port, listening_socket, wait_for_port

CONF = Path(__file__).with_name("gunicorn_conf.py")


class Workers:
    """A running multi-worker server: its process, ports and metrics directory."""

    def __init__(self, proc: Background, port: int, directory: Path, metrics_port: int | None = None) -> None:
        self.proc = proc
        self.port = port
        self.directory = directory
        self.metrics_port = metrics_port

    def worker_files(self) -> list[str]:
        if not self.directory.is_dir():  # gunicorn's on_starting has not run yet
            return []
        return sorted(n for n in os.listdir(self.directory) if n.endswith(".mmap") and "archive" not in n)

    def wait_for_workers(self, n: int, gone: int | None = None, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            files = self.worker_files()
            stale = gone is not None and any(f.startswith(f"opskit-{gone}-") for f in files)
            if len(files) == n and not stale:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker files {files}; gunicorn said: {self.proc.stderr()[-2000:]}")
            time.sleep(0.05)

    def get(self, path: str, port: int | None = None) -> httpx.Response:
        # A new connection per request, so that any worker may take it.
        with httpx.Client(base_url=f"http://127.0.0.1:{port or self.port}", timeout=10) as client:
            return client.get(path, headers={"connection": "close"})

    def requests(self, n: int) -> set[int]:
        """Send ``n`` requests, 8 at a time; return the pids of the workers that answered."""
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda i: self.get(f"/spread/{i}"), range(n)))
        assert all(r.status_code == 200 for r in responses)
        return {int(r.json()["pid"]) for r in responses}

    def total(self, metrics_port: bool = False, family: str = "http_requests") -> float:
        """Sum of a counter in one scrape (answered by whichever worker)."""
        r = self.get("/metrics", self.metrics_port if metrics_port else None)
        assert r.status_code == 200
        families = {f.name: f for f in parse_text(r.text)}
        return sum(s.value for s in families[family].samples if s.name.endswith("_total"))


def start_gunicorn(directory: Path) -> Workers:
    sock = listening_socket()
    port = sock.getsockname()[1]
    metrics_port = free_port()
    argv = ["-w", "3", "-k", "uvicorn_worker.UvicornWorker", "-c", str(CONF), "-b", f"fd://{sock.fileno()}"]
    proc = Background(
        [sys.executable, "-m", "gunicorn", *argv, "tests.metrics.served:app"],
        env={
            "PROMETHEUS_MULTIPROC_DIR": str(directory),
            "OPSKIT_METRICS_PORT": str(metrics_port),
            "OPSKIT_METRICS_HOST": "127.0.0.1",
        },
        cwd=ROOT,
        pass_fds=[sock.fileno()],
    )
    sock.close()
    return Workers(proc, port, directory, metrics_port)


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Workers]:
    server = start_gunicorn(tmp_path / "prometheus-multiproc")
    try:
        wait_for_port(server.port)
        server.wait_for_workers(3)
        yield server
    finally:
        server.proc.close()


@pytest.mark.slow
class TestGunicorn:
    def test_totals_are_exact_across_workers_and_a_killed_worker(self, gunicorn: Workers) -> None:
        """N requests spread over 3 workers sum to N in every scrape, on the app port and on the metrics
        port all workers share, also after a SIGKILL and the worker's replacement."""
        n = 240
        pids = gunicorn.requests(n)
        assert len(pids) >= 2, "the requests should have reached several workers"
        assert [gunicorn.total() for _ in range(6)] == [n] * 6
        assert [gunicorn.total(metrics_port=True) for _ in range(6)] == [n] * 6

        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        gunicorn.wait_for_workers(3, gone=victim)  # replaced, and its file folded into the archive
        assert "opskit-archive.mmap" in os.listdir(gunicorn.directory)
        assert [gunicorn.total() for _ in range(6)] == [n] * 6

        more = 60
        gunicorn.requests(more)
        assert [gunicorn.total() for _ in range(3)] == [n + more] * 3
        assert [gunicorn.total(metrics_port=True) for _ in range(3)] == [n + more] * 3
        # prometheus_client's own metrics share the directory and add up as well
        assert [gunicorn.total(family="opskit_test_spread_calls") for _ in range(3)] == [n + more] * 3
        gunicorn.proc.stop()
        logs = gunicorn.proc.stdout() + gunicorn.proc.stderr()
        assert "opskit component failed" not in logs  # every worker could listen on the metrics port


@pytest.mark.slow
class TestUvicornWorkers:
    def test_workers_add_up_without_a_configured_directory(self) -> None:
        """`uvicorn --workers 2` without PROMETHEUS_MULTIPROC_DIR: scrapes still count every request once."""
        sock = listening_socket()
        port = sock.getsockname()[1]
        proc = Background(
            [sys.executable, "-m", "uvicorn", "tests.metrics.served:app", "--workers", "2", "--fd", str(sock.fileno())],
            cwd=ROOT,
            pass_fds=[sock.fileno()],
        )
        sock.close()
        private = Path(tempfile.gettempdir()) / f"opskit-metrics-{proc.pid}-{process_start_time(proc.pid)}"
        server = Workers(proc, port, private)
        try:
            server.wait_for_workers(2)
            n = 120
            pids = server.requests(n)
            assert len(pids) == 2, "the requests should have reached both workers"
            assert [server.total() for _ in range(6)] == [n] * 6
        finally:
            proc.close()
            shutil.rmtree(private, ignore_errors=True)
