"""Under real gunicorn (2 workers, --preload): spans from every worker, none lost on SIGTERM."""

from __future__ import annotations

import secrets
import signal
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import Background, free_port, listening_socket, wait_for_port
from tests.tracing.receiver import OtlpReceiver

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def _gunicorn(sock_fd: int, env: dict[str, str]) -> Background:
    return Background(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "tests.tracing.served:app",
            "-k",
            "uvicorn_worker.UvicornWorker",
            "-w",
            "2",
            "--preload",
            "-c",
            str(HERE / "gunicorn_conf.py"),
            "--bind",
            f"fd://{sock_fd}",
            "--graceful-timeout",
            "10",
        ],
        env={"PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        pass_fds=[sock_fd],
    )


def _samples(port: int, name: str) -> dict[str, float]:
    """One scrape (answered by any worker, summed over all): the samples of ``name`` by reason."""
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Connection": "close"}, timeout=10)
    assert r.status_code == 200
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            if sample.name == name:
                out[sample.labels.get("reason", "")] = sample.value
    return out


@pytest.mark.slow
class TestGunicorn:
    def test_both_workers_export_and_sigterm_flushes(self, receiver: OtlpReceiver, tmp_path: Path) -> None:
        """Pipelines built per worker after fork; SIGTERM exports every finished span; access logs correlate."""
        sock = listening_socket()
        port = sock.getsockname()[1]
        server = _gunicorn(
            sock.fileno(),
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_SERVICE_NAME": "gunicorn-test",
                # Nothing is exported on schedule: every span that arrives was flushed at shutdown.
                "OTEL_BSP_SCHEDULE_DELAY": "600000",
                "TEST_MASTER_THREADS": str(tmp_path / "master-threads"),
            },
        )
        sock.close()
        try:
            wait_for_port(port)
            sent: dict[str, int] = {}
            pids: set[int] = set()
            for _ in range(200):
                trace_id = secrets.token_hex(16)
                headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01", "Connection": "close"}
                r = httpx.get(f"http://127.0.0.1:{port}/pid", headers=headers, timeout=10)
                assert r.status_code == 200
                sent[trace_id] = r.json()["pid"]
                pids.add(r.json()["pid"])
                if len(pids) == 2 and len(sent) >= 10:
                    break
            assert len(pids) == 2, "requests never reached the second worker"
            master_threads = (tmp_path / "master-threads").read_text().split()
            assert len(master_threads) == 2  # recorded before each fork
            assert not [name for name in ",".join(master_threads).split(",") if name.startswith("Otel")]
            assert receiver.spans() == []  # still queued in the workers
            server.send_signal(signal.SIGTERM)
            assert server.wait(30) == 0, server.stderr()
            stdout = server.stdout()
        finally:
            server.close()
        spans = receiver.spans()
        lines = [orjson.loads(line) for line in stdout.splitlines() if line.strip()]
        access = {line["trace_id"]: line["span_id"] for line in lines if line.get("path") == "/pid"}
        assert access == {span.trace_id: span.span_id for span in spans}  # logs and spans correlate
        assert {span.trace_id: span.attributes["process.pid"] for span in spans} == sent
        assert len(spans) == len(sent)  # one span per request, none twice
        assert {span.attributes["process.pid"] for span in spans} == pids
        assert all(span.name == "GET /pid" and span.resource["service.name"] == "gunicorn-test" for span in spans)

    def test_export_failures_are_counted_across_workers(self, tmp_path: Path) -> None:
        """With the collector down, one scrape counts every worker's lost spans: as many as requests served."""
        sock = listening_socket()
        port = sock.getsockname()[1]
        server = _gunicorn(
            sock.fileno(),
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nothing listens
                "OTEL_BSP_SCHEDULE_DELAY": "100",
                "OTEL_EXPORTER_OTLP_TIMEOUT": "300",
                "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
                "TEST_MASTER_THREADS": str(tmp_path / "master-threads"),
            },
        )
        sock.close()
        try:
            wait_for_port(port)
            pids: set[int] = set()
            sent = 0
            while sent < 200 and (len(pids) < 2 or sent < 10):
                r = httpx.get(f"http://127.0.0.1:{port}/pid", headers={"Connection": "close"}, timeout=10)
                assert r.status_code == 200  # the app serves with its collector down
                pids.add(r.json()["pid"])
                sent += 1
            assert len(pids) == 2, "requests never reached the second worker"
            deadline = time.monotonic() + 20
            while _samples(port, "opskit_trace_spans_dropped_total").get("export_failed", 0) < sent:
                assert time.monotonic() < deadline, _samples(port, "opskit_trace_spans_dropped_total")
                time.sleep(0.2)
            assert _samples(port, "opskit_trace_spans_dropped_total") == {
                "export_failed": sent,
                "queue_full": 0,
                "shutdown": 0,
            }
            failures = _samples(port, "opskit_trace_export_failures_total")
            assert failures["connection"] >= 2  # at least one failed batch in each worker
            assert sum(failures.values()) == failures["connection"]
            assert _samples(port, "opskit_trace_spans_exported_total") == {"": 0}
            server.send_signal(signal.SIGTERM)
            assert server.wait(30) == 0, server.stderr()
        finally:
            server.close()
