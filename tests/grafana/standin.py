"""A stand-in exporter: the metrics of ``exported(naming)``, fed with mixed traffic, served over HTTP.

It exposes exactly the names and labels listed in tests/prometheus/exported_metrics.py, so the
dashboards and rules can be evaluated against a live scrape before (and independently of) the demo
app. The same harness points at the demo app under gunicorn once it ships: replace this target.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import TracebackType
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_wsgi_server

from opskit.metrics.naming import Naming
from tests.prometheus.exported_metrics import exported
from tests.servers import free_port

# Buckets include 0.5 s: the latency SLO counts requests above it.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class Request:
    """One kind of request of the mixed traffic: ok, error, slow, rate-limited."""

    route: str
    status: str
    seconds: float

    def label(self, name: str) -> str:
        values = {
            "method": "GET",
            "route": self.route,
            "status": self.status,
            "exception_type": "ValueError",
            "version": "0.1.0",
            "service": "demo",
            "policy": "default",
            "decision": "limited" if self.status == "429" else "allowed",
            "reason": "timeout",
            "task": "send_receipt",
            "kind": "blocked",
            "direction": "received",
            "label": "tenant",
            # OPSKIT_METRICS_NAMING=otel
            "http_request_method": "GET",
            "http_route": self.route,
            "http_response_status_code": self.status,
            "url_scheme": "http",
            "error_type": self.status if self.status.startswith("5") else "",
        }
        return values[name]


TRAFFIC = (
    Request("/items/{item_id}", "200", 0.02),
    Request("/boom", "500", 0.01),
    Request("/slow", "200", 0.8),
    Request("/limited", "429", 0.001),
)


class StandInExporter:
    """Serves the exported metrics on a free loopback port; a thread adds traffic until closed."""

    def __init__(self, period: float = 0.1, naming: Naming = "prometheus") -> None:
        self.registry = CollectorRegistry()
        self._counters: list[Counter] = []
        self._histograms: list[Histogram] = []
        self._gauges: list[Gauge] = []
        self._labels: dict[int, tuple[str, ...]] = {}
        for metric in exported(naming):
            self._register(metric.name, metric.type, metric.labels)
        self.port = free_port()
        self._server: WSGIServer
        self._server, self._thread = start_wsgi_server(self.port, addr="127.0.0.1", registry=self.registry)
        self._stop = threading.Event()
        self._period = period
        self._feeder = threading.Thread(target=self._feed, daemon=True)
        self._feeder.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _register(self, name: str, kind: str, labels: tuple[str, ...]) -> None:
        if kind == "counter":
            counter = Counter(name, name, labels, registry=self.registry)
            self._labels[id(counter)] = labels
            self._counters.append(counter)
        elif kind == "histogram":
            histogram = Histogram(name, name, labels, registry=self.registry, buckets=BUCKETS)
            self._labels[id(histogram)] = labels
            self._histograms.append(histogram)
        else:
            gauge = Gauge(name, name, labels, registry=self.registry)
            self._labels[id(gauge)] = labels
            self._gauges.append(gauge)

    def _values(self, metric: Counter | Histogram | Gauge, request: Request) -> list[str]:
        return [request.label(name) for name in self._labels[id(metric)]]

    def _feed(self) -> None:
        while not self._stop.is_set():
            for request in TRAFFIC:
                for counter in self._counters:
                    values = self._values(counter, request)
                    (counter.labels(*values) if values else counter).inc()
                for histogram in self._histograms:
                    values = self._values(histogram, request)
                    (histogram.labels(*values) if values else histogram).observe(request.seconds)
                for gauge in self._gauges:
                    values = self._values(gauge, request)
                    (gauge.labels(*values) if values else gauge).set(1)
            self._stop.wait(self._period)

    def close(self) -> None:
        self._stop.set()
        self._feeder.join(5)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> StandInExporter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
