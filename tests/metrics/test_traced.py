"""Exemplars from real tracing, several gunicorn workers, scraped by a real Prometheus."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.prometheus.server import prometheus_server
from tests.servers import ROOT, Background, listening_socket
from tests.tracing.receiver import otlp_receiver

CONF = Path(__file__).with_name("gunicorn_conf.py")


@pytest.mark.slow
class TestTracedExemplars:
    def test_exemplars_name_exported_spans_across_workers(self, tmp_path: Path) -> None:
        """With tracing on under gunicorn (2 workers), Prometheus stores exemplars whose trace IDs are
        those of server spans the app exported."""
        with otlp_receiver() as receiver:
            sock = listening_socket()
            port = sock.getsockname()[1]
            argv = ["-w", "2", "-k", "uvicorn_worker.UvicornWorker", "-c", str(CONF), "-b", f"fd://{sock.fileno()}"]
            server = Background(
                [sys.executable, "-m", "gunicorn", *argv, "tests.metrics.traced:app"],
                env={
                    "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "multiproc"),
                    "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                    "OTEL_BSP_SCHEDULE_DELAY": "200",
                    "OTEL_SERVICE_NAME": "traced-metrics",
                },
                cwd=ROOT,
                pass_fds=[sock.fileno()],
            )
            sock.close()
            stack = contextlib.ExitStack()
            try:
                prometheus = stack.enter_context(prometheus_server(targets=[f"127.0.0.1:{port}"]))
                n = 20
                deadline = time.monotonic() + 30
                sent = 0
                while sent < n:  # gunicorn listens before its workers answer
                    try:
                        r = httpx.get(f"http://127.0.0.1:{port}/orders/{sent}", headers={"connection": "close"})
                    except httpx.TransportError:
                        assert time.monotonic() < deadline, server.stderr()[-2000:]
                        time.sleep(0.1)
                        continue
                    assert r.status_code == 200
                    sent += 1

                def counted() -> bool:
                    result = prometheus.query('sum(http_requests_total{route="/orders/{order_id}"})')
                    return bool(result) and float(result[0]["value"][1]) == n

                prometheus.until("the request count", counted)

                selector = 'http_request_duration_seconds_bucket{route="/orders/{order_id}"}'
                found = prometheus.until("an exemplar", lambda: prometheus.exemplars(selector))
                spans = receiver.wait_for(n, timeout=15)
                exported = {s.trace_id for s in spans if s.attributes.get("http.route") == "/orders/{order_id}"}
                assert len(exported) == n
                assert {e["labels"]["trace_id"] for e in found} <= exported
            finally:
                stack.close()
                server.close()
