"""Metrics, logs and spans over OTLP from `opskit serve` with 2 workers, to a real receiver."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import free_port
from tests.serving.processes import opskit_serve
from tests.tracing.receiver import OtlpReceiver, attributes, otlp_receiver

APP = "tests.apps.overridden:app"
TEMPORALITY = {
    "cumulative": AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE,
    "delta": AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA,
}


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as r:
        yield r


def _env(endpoint: str, **extra: str) -> dict[str, str]:
    return {
        "WEB_CONCURRENCY": "2",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_METRICS_EXPORTER": "prometheus,otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
        **extra,
    }


def _until_both_workers(port: int, at_least: int = 10) -> tuple[int, set[int]]:
    """GET /work (new connection each) until both workers answered and ``at_least`` were sent."""
    pids: set[int] = set()
    sent = 0
    while sent < 200 and (len(pids) < 2 or sent < at_least):
        r = httpx.get(f"http://127.0.0.1:{port}/work", headers={"Connection": "close"}, timeout=10)
        assert r.status_code == 200
        pids.add(r.json()["pid"])
        sent += 1
    assert len(pids) == 2, "requests never reached the second worker"
    return sent, pids


def _points(receiver: OtlpReceiver, name: str) -> list[tuple[dict[str, Any], int, Any]]:
    """Every data point of metric ``name``: (resource, temporality, point), in the order received."""
    out: list[tuple[dict[str, Any], int, Any]] = []
    for request in receiver.metrics():
        for rm in request.resource_metrics:
            resource = attributes(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name != name:
                        continue
                    data = metric.sum if metric.HasField("sum") else metric.histogram
                    out.extend((resource, data.aggregation_temporality, p) for p in data.data_points)
    return out


def _of_route(points: list[tuple[dict[str, Any], int, Any]]) -> list[tuple[dict[str, Any], int, Any]]:
    return [p for p in points if "/work" in attributes(p[2].attributes).values()]


@pytest.mark.slow
class TestServed:
    @pytest.mark.parametrize("temporality", ["cumulative", "delta"])
    def test_metrics_logs_and_spans_of_both_workers(self, receiver: OtlpReceiver, temporality: str) -> None:
        """Each worker exports its own points (its own service.instance.id) with the asked temporality; they
        add up to the requests sent; exemplars and log records carry the trace IDs of exported spans."""
        env = _env(receiver.endpoint, OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=temporality)
        with opskit_serve(APP, env) as (process, port):
            sent, pids = _until_both_workers(port)
            time.sleep(0.5)  # at least one interval export while serving, besides the last one
            process.send_signal(signal.SIGTERM)  # each worker exports once more on its way out
            assert process.wait(30) == 0, process.stderr()

        spans = {s.trace_id: s for s in receiver.spans() if s.name == "GET /work"}
        assert len(spans) == sent

        requests = _of_route(_points(receiver, "http_requests_total"))
        assert {temp for _, temp, _ in requests} == {TEMPORALITY[temporality]}
        by_instance: dict[str, list[Any]] = {}
        for resource, _, point in requests:
            by_instance.setdefault(resource["service.instance.id"], []).append((resource["process.pid"], point))
        assert len(by_instance) == 2
        assert {pid for points in by_instance.values() for pid, _ in points} == pids
        if temporality == "cumulative":
            # Each worker's last point is its total; the collector adds the workers up.
            total = sum(max(points, key=lambda p: p[1].time_unix_nano)[1].as_double for points in by_instance.values())
        else:
            total = sum(point.as_double for points in by_instance.values() for _, point in points)
            for points in by_instance.values():  # back-to-back intervals, none counted twice
                ordered = sorted(p.time_unix_nano for _, p in points)
                assert len(set(ordered)) == len(ordered)
        assert total == sent

        durations = _of_route(_points(receiver, "http_request_duration_seconds"))
        assert durations and all(list(p.explicit_bounds)[:3] == [0.005, 0.01, 0.025] for _, _, p in durations)
        exemplars = {e.trace_id.hex() for _, _, p in durations for e in p.exemplars}
        exemplars |= {e.trace_id.hex() for _, _, p in requests for e in p.exemplars}
        assert exemplars and exemplars <= set(spans)

        records = [
            (attributes(record.attributes), record)
            for request in receiver.logs()
            for rl in request.resource_logs
            for sl in rl.scope_logs
            for record in sl.log_records
        ]
        access = [r for attrs, r in records if attrs.get("path") == "/work"]
        assert {r.trace_id.hex() for r in access} == set(spans)
        assert {r.span_id.hex() for r in access} == {s.span_id for s in spans.values()}
        working = [r for _, r in records if r.body.string_value == "working"]
        assert len(working) == sent and {r.trace_id.hex() for r in working} == set(spans)
        assert {r.severity_text for r in working} == {"INFO"}

    def test_collector_down_the_app_serves_and_failures_are_counted(self) -> None:
        """Nothing listens at the endpoint: every request is answered; metric and log export failures
        show up in the Prometheus scrape."""
        env = _env(f"http://127.0.0.1:{free_port()}", OTEL_EXPORTER_OTLP_TIMEOUT="300")
        with opskit_serve(APP, env) as (process, port):
            _until_both_workers(port)
            deadline = time.monotonic() + 20
            while True:
                samples = _scrape(port)
                metrics_failed = samples.get(("opskit_metrics_otlp_export_failures_total", "connection"), 0)
                logs_failed = samples.get(("opskit_log_export_failures_total", "connection"), 0)
                if metrics_failed >= 2 and logs_failed >= 1:
                    break
                assert time.monotonic() < deadline, samples
                time.sleep(0.2)
            assert samples[("opskit_log_records_dropped_total", "export_failed")] > 0
            assert samples[("opskit_metrics_otlp_exports_total", "")] == 0
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0, process.stderr()


def _scrape(port: int) -> dict[tuple[str, str], float]:
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Connection": "close"}, timeout=10)
    assert r.status_code == 200
    return {
        (sample.name, sample.labels.get("reason", "")): sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
        if sample.name.startswith(("opskit_metrics_otlp", "opskit_log_"))
    }
