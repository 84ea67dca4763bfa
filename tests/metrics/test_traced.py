"""Exemplars from real tracing, several gunicorn workers, scraped by a real Prometheus."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.metrics.prometheus import Prometheus
from tests.servers import ROOT, Background, listening_socket, wait_for_port
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
            prometheus = Prometheus(tmp_path, f"127.0.0.1:{port}")
            try:
                wait_for_port(prometheus.port)
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
                    result = prometheus.api("query", query='sum(http_requests_total{route="/orders/{order_id}"})')
                    return bool(result["result"]) and float(result["result"][0]["value"][1]) == n

                prometheus.until("the request count", counted)

                def exemplars() -> list[dict[str, Any]]:
                    now = time.time()
                    data = prometheus.api(
                        "query_exemplars",
                        query='http_request_duration_seconds_bucket{route="/orders/{order_id}"}',
                        start=str(now - 600),
                        end=str(now + 60),
                    )
                    return [e for group in data for e in group["exemplars"]]

                found = prometheus.until("an exemplar", exemplars)
                spans = receiver.wait_for(n, timeout=15)
                exported = {s.trace_id for s in spans if s.attributes.get("http.route") == "/orders/{order_id}"}
                assert len(exported) == n
                assert {e["labels"]["trace_id"] for e in found} <= exported
            finally:
                prometheus.proc.close()
                server.close()
