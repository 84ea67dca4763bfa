"""A real uvicorn server with a separate metrics port, scraped by a real Prometheus server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.prometheus.server import prometheus_server
from tests.servers import ROOT, Background, free_port, listening_socket, wait_for_port

TRACE = "a3ce929d0e0e47364bf92f3577b34da6"


class Served:
    def __init__(self) -> None:
        sock = listening_socket()
        self.app_port = sock.getsockname()[1]
        self.metrics_port = free_port()
        self.proc = Background(
            [sys.executable, "-m", "uvicorn", "tests.metrics.served:app", "--fd", str(sock.fileno())],
            env={
                "OPSKIT_METRICS_PORT": str(self.metrics_port),
                "OPSKIT_METRICS_HOST": "127.0.0.1",
                "OPSKIT_METRICS_ON_APP_PORT": "false",
                "OPSKIT_SERVICE_VERSION": "9.9.9",
                "OTEL_SERVICE_NAME": "served-metrics",
            },
            cwd=ROOT,
            pass_fds=[sock.fileno()],
        )
        sock.close()
        self.app = f"http://127.0.0.1:{self.app_port}"
        self.metrics = f"http://127.0.0.1:{self.metrics_port}"


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    server = Served()
    try:
        wait_for_port(server.metrics_port)
        yield server
    finally:
        server.proc.close()


@pytest.mark.slow
class TestMetricsPort:
    def test_serves_metrics_and_nothing_else(self, served: Served) -> None:
        """The metrics port answers the metrics path only; the app port no longer has /metrics."""
        with httpx.Client() as c:
            assert c.get(f"{served.app}/items/1").status_code == 200
            r = c.get(f"{served.metrics}/metrics")
            assert r.status_code == 200
            assert 'opskit_build_info{version="9.9.9",service="served-metrics"} 1.0' in r.text
            assert 'http_requests_total{method="GET",route="/items/{item_id}",status="200"}' in r.text
            r = c.get(
                f"{served.metrics}/metrics",
                headers={"accept": "application/openmetrics-text", "accept-encoding": "gzip"},
            )
            assert r.headers["content-encoding"] == "gzip" and r.text.endswith("# EOF\n")
            for path in ("/", "/items/1", "/healthz", "/metrics/x"):
                assert c.get(f"{served.metrics}{path}").status_code == 404
            assert c.post(f"{served.metrics}/metrics").status_code == 405
            assert c.head(f"{served.metrics}/metrics").status_code == 200
            r = c.get(f"{served.app}/metrics")
            assert r.status_code == 404 and "http_requests_total" not in r.text

    def test_garbage_does_not_hurt_the_listener(self, served: Served) -> None:
        """A malformed request gets 400; the listener keeps serving."""
        import socket

        with socket.create_connection(("127.0.0.1", served.metrics_port), timeout=5) as s:
            s.sendall(b"NONSENSE\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 400")
        with httpx.Client() as c:
            assert c.get(f"{served.metrics}/metrics").status_code == 200


@pytest.mark.slow
class TestPrometheus:
    def test_scrapes_series_and_exemplars(self, served: Served, tmp_path: Path) -> None:
        """Prometheus scrapes the metrics port (OpenMetrics), stores the series and the trace exemplar."""
        with prometheus_server(targets=[f"127.0.0.1:{served.metrics_port}"]) as prometheus:
            with httpx.Client() as c:
                for i in range(5):
                    c.get(f"{served.app}/sub/hello/p{i}", headers={"x-test-trace-id": TRACE})
            query = 'http_requests_total{route="/sub/hello/{name}",status="200"}'

            def counted() -> bool:
                result = prometheus.query(query)
                return bool(result) and float(result[0]["value"][1]) == 5.0

            prometheus.until("the request count", counted)
            up = prometheus.query('up{job="opskit"}')
            assert up[0]["value"][1] == "1"

            found = prometheus.until(
                "an exemplar",
                lambda: prometheus.exemplars('http_request_duration_seconds_bucket{route="/sub/hello/{name}"}'),
            )
            assert {e["labels"]["trace_id"] for e in found} == {TRACE}
