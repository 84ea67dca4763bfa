"""OTLP metrics of one worker: what a real receiver decodes, per temporality; failures counted, never raised."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric

from opskit.metrics.otlp import OtlpMetrics, create_component
from opskit.metrics.registry import Registry
from opskit.otlp import OtlpHttpClient, transport
from opskit.runtime import Runtime
from opskit.settings import ConfigError, Settings, load_settings
from tests.servers import free_port
from tests.tracing.receiver import OtlpReceiver, attributes, otlp_receiver

DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def registry() -> Iterator[Registry]:
    r = Registry(None)
    yield r
    r.close()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as r:
        yield r


def _settings(receiver: OtlpReceiver | None = None, **overrides: Any) -> Settings:
    endpoint = receiver.endpoint if receiver is not None else f"http://127.0.0.1:{free_port()}"
    return load_settings(metrics_exporter=("otlp",), otlp_endpoint=endpoint, **overrides)


def _metrics(request: ExportMetricsServiceRequest) -> dict[str, Metric]:
    return {m.name: m for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


def _define(registry: Registry) -> tuple[Any, Any, Any]:
    requests = registry.counter("app_requests_total", "Requests.", ["route"])
    duration = registry.histogram("app_duration_seconds", "Durations.", ["route"], buckets=(0.1, 1.0))
    in_flight = registry.gauge("app_in_flight", "In flight.")
    return requests, duration, in_flight


class TestEncoding:
    def test_cumulative_points_buckets_and_exemplars(self, registry: Registry, receiver: OtlpReceiver) -> None:
        """Counters become monotonic cumulative sums, histograms keep their real bounds, gauges their value;
        the trace IDs recorded with the values arrive as exemplars."""
        requests, duration, in_flight = _define(registry)
        requests.labels("/a").inc(trace_id=TRACE)
        requests.labels("/a").inc()
        duration.labels("/a").observe(0.05)
        duration.labels("/a").observe(0.5, trace_id=TRACE)
        duration.labels("/a").observe(5.0)
        in_flight.set(3)
        OtlpMetrics(registry, _settings(receiver, service_name="shop")).export()

        [request] = receiver.metrics()
        [resource_metrics] = request.resource_metrics
        resource = attributes(resource_metrics.resource.attributes)
        assert resource["service.name"] == "shop" and resource["service.instance.id"]
        metrics = _metrics(request)
        total = metrics["app_requests_total"].sum
        assert (total.aggregation_temporality, total.is_monotonic) == (CUMULATIVE, True)
        [point] = total.data_points
        assert (attributes(point.attributes), point.as_double) == ({"route": "/a"}, 2.0)
        assert [e.trace_id.hex() for e in point.exemplars] == [TRACE]
        histogram = metrics["app_duration_seconds"]
        assert histogram.unit == "s" and histogram.histogram.aggregation_temporality == CUMULATIVE
        [h] = histogram.histogram.data_points
        assert list(h.explicit_bounds) == [0.1, 1.0]
        assert list(h.bucket_counts) == [1, 1, 1]
        assert (h.count, h.sum) == (3, pytest.approx(5.55))
        assert [(e.trace_id.hex(), e.as_double) for e in h.exemplars] == [(TRACE, 0.5)]
        assert h.start_time_unix_nano < h.time_unix_nano
        [g] = metrics["app_in_flight"].gauge.data_points
        assert g.as_double == 3.0

    def test_cumulative_exports_totals_and_each_exemplar_once(self, registry: Registry) -> None:
        """A second cumulative export repeats the totals (same start time) but not the exemplars already sent."""
        requests, _, _ = _define(registry)
        requests.labels("/a").inc(trace_id=TRACE)
        exporter = OtlpMetrics(registry, _settings())
        first = _metrics(exporter.collect())["app_requests_total"].sum.data_points[0]
        requests.labels("/a").inc()
        second = _metrics(exporter.collect())["app_requests_total"].sum.data_points[0]
        assert (first.as_double, second.as_double) == (1.0, 2.0)
        assert first.start_time_unix_nano == second.start_time_unix_nano
        assert len(first.exemplars) == 1 and len(second.exemplars) == 0

    @pytest.mark.parametrize("preference", ["delta", "LowMemory"])
    def test_delta_sends_what_changed_since_the_last_export(self, registry: Registry, preference: str) -> None:
        """delta and lowmemory: counters and histograms as deltas over back-to-back intervals, unchanged series
        left out, gauges as their value."""
        requests, duration, in_flight = _define(registry)
        exporter = OtlpMetrics(registry, _settings(otlp_metrics_temporality=preference.lower()))
        requests.labels("/a").inc(2)
        requests.labels("/b").inc()
        duration.labels("/a").observe(0.5)
        in_flight.set(1)
        first = _metrics(exporter.collect())
        requests.labels("/a").inc(3)
        second = _metrics(exporter.collect())

        assert first["app_requests_total"].sum.aggregation_temporality == DELTA
        assert {
            attributes(p.attributes)["route"]: p.as_double for p in first["app_requests_total"].sum.data_points
        } == {
            "/a": 2.0,
            "/b": 1.0,
        }
        [point] = second["app_requests_total"].sum.data_points
        assert (attributes(point.attributes), point.as_double) == ({"route": "/a"}, 3.0)
        first_point = first["app_requests_total"].sum.data_points[0]
        assert point.start_time_unix_nano == first_point.time_unix_nano  # intervals touch, never overlap
        assert "app_duration_seconds" not in second  # nothing observed since
        assert second["app_in_flight"].gauge.data_points[0].as_double == 1.0

    def test_headers_gzip_and_signal_endpoint(self, registry: Registry, receiver: OtlpReceiver) -> None:
        """OTEL_EXPORTER_OTLP_METRICS_ENDPOINT is used as given; signal headers win over the generic ones."""
        _define(registry)[0].labels("/a").inc()
        settings = load_settings(
            metrics_exporter=("otlp",),
            otlp_metrics_endpoint=f"{receiver.endpoint}/custom/v1/metrics",
            otlp_metrics_headers="x-tenant=shop",
            otlp_metrics_compression="gzip",
        )
        OtlpMetrics(registry, settings).export()
        [sent] = receiver.requests
        assert sent["path"] == "/custom/v1/metrics"
        assert sent["x-tenant"] == "shop" and sent["Content-Encoding"] == "gzip"
        assert sent["Content-Type"] == "application/x-protobuf"
        assert len(receiver.metrics()) == 1


class TestSettings:
    def test_generic_variables_are_the_fallback(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """OTEL_EXPORTER_OTLP_{HEADERS,TIMEOUT,COMPRESSION} apply unless the METRICS_ variant is set."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "a=1")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
        settings = load_settings()
        assert (settings.otlp_metrics_headers, settings.otlp_metrics_timeout_ms) == ("a=1", 2500)
        assert settings.otlp_metrics_compression == "gzip"
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "b=2")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "700")
        settings = load_settings()
        assert (settings.otlp_metrics_headers, settings.otlp_metrics_timeout_ms) == ("b=2", 700)

    def test_exporter_list(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Prometheus is the default; otlp alone, both, or none; an unknown name fails naming the variable."""
        assert load_settings().metrics_exporter == ("prometheus",)
        monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus, OTLP")
        settings = load_settings()
        assert (settings.metrics_prometheus, settings.metrics_otlp) == (True, True)
        monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
        assert load_settings().metrics_prometheus is False
        monkeypatch.setenv("OTEL_METRICS_EXPORTER", "statsd")
        with pytest.raises(ConfigError, match="OTEL_METRICS_EXPORTER='statsd'"):
            load_settings()

    def test_bad_temporality_and_interval_fail_naming_the_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "sometimes")
        with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"):
            load_settings()
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE")
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "0")
        with pytest.raises(ConfigError, match="OTEL_METRIC_EXPORT_INTERVAL"):
            load_settings()

    def test_grpc_without_grpcio_fails_at_startup(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """gRPC without the grpc extra fails when the component is built, naming the variable and the fix."""
        monkeypatch.setattr(transport, "grpc_available", lambda: False)  # grpcio cannot be uninstalled here
        settings = load_settings(metrics_exporter=("otlp",), otlp_metrics_protocol="grpc")
        with pytest.raises(ConfigError, match=r"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL='grpc'.*opskit-asgi\[grpc\]"):
            create_component(Runtime(settings))

    def test_no_component_without_otlp(self) -> None:
        assert create_component(Runtime(load_settings())) is None


def _failures(registry: Registry) -> dict[str, float]:
    for metric, series in registry.collect():
        if metric.name == "opskit_metrics_otlp_export_failures_total":
            return {s.labels[0]: s.data.values[0] for s in series if s.data.values[0]}
    return {}


class _Status:
    """A collector answering every export with one status; counts the attempts."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.attempts = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                owner.attempts += 1
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TestFailures:
    def test_collector_down_is_counted_and_logged_once(
        self, registry: Registry, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Nothing listens: each export fails as `connection`, counted; one warning per interval, nothing raised."""
        _define(registry)[0].labels("/a").inc()
        exporter = OtlpMetrics(registry, _settings(otlp_metrics_timeout_ms=300))
        with caplog.at_level("WARNING", logger="opskit.metrics"):
            exporter.export()
            exporter.export()
        assert _failures(registry) == {"connection": 2.0}
        assert len([r for r in caplog.records if "OTLP export failed (connection" in r.getMessage()]) == 1

    def test_a_failed_delta_export_is_covered_by_the_next(self, registry: Registry, receiver: OtlpReceiver) -> None:
        """Collector down for one delta export: the next one (collector back) carries both intervals' counts."""
        requests, _, _ = _define(registry)
        exporter = OtlpMetrics(registry, _settings(otlp_metrics_temporality="delta", otlp_metrics_timeout_ms=300))
        requests.labels("/a").inc(2)
        exporter.export()  # nothing listens
        requests.labels("/a").inc(3)
        exporter.client = OtlpHttpClient(f"{receiver.endpoint}/v1/metrics")
        exporter.export()
        [request] = receiver.metrics()
        [point] = _metrics(request)["app_requests_total"].sum.data_points
        assert point.as_double == 5.0
        assert _failures(registry) == {"connection": 1.0}

    def test_retryable_status_is_retried_within_the_timeout(self, registry: Registry) -> None:
        """503 with Retry-After: retried after the time asked until the timeout, then counted once as http_5xx."""
        collector = _Status(503, {"Retry-After": "1"})
        try:
            settings = load_settings(
                metrics_exporter=("otlp",), otlp_endpoint=collector.endpoint, otlp_metrics_timeout_ms=1500
            )
            OtlpMetrics(registry, settings).export()
        finally:
            collector.close()
        assert collector.attempts == 2  # the second second would end past the timeout: no third
        assert _failures(registry) == {"http_5xx": 1.0}

    def test_a_refused_export_is_not_retried(self, registry: Registry) -> None:
        """400: the collector refuses the data; sending it again would not help."""
        collector = _Status(400)
        try:
            OtlpMetrics(registry, load_settings(metrics_exporter=("otlp",), otlp_endpoint=collector.endpoint)).export()
        finally:
            collector.close()
        assert collector.attempts == 1
        assert _failures(registry) == {"http_4xx": 1.0}


class TestPrometheusEndpoint:
    def test_otlp_alone_serves_no_metrics_endpoint(self) -> None:
        """OTEL_METRICS_EXPORTER=otlp: no /metrics on the app's port; with prometheus,otlp it stays."""
        from opskit.metrics.component import MetricsComponent

        registry = Registry(None)
        try:
            alone = MetricsComponent(Runtime(load_settings(metrics_exporter=("otlp",))), registry)
            both = MetricsComponent(Runtime(load_settings(metrics_exporter=("prometheus", "otlp"))), registry)
            assert alone.endpoints() == {}
            assert list(both.endpoints()) == ["/metrics"]
        finally:
            registry.close()
