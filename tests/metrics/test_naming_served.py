"""OPSKIT_METRICS_NAMING=otel under `opskit serve` with 2 workers: the same names in /metrics and over OTLP."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import which
from tests.serving.processes import opskit_serve
from tests.tracing.receiver import OtlpReceiver, attributes, otlp_receiver

APP = "tests.apps.overridden:app"
SERVER = ("http.request.method", "http.route", "http.response.status_code", "url.scheme")


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as r:
        yield r


def _metrics(receiver: OtlpReceiver) -> dict[str, list[tuple[str, Any]]]:
    """Every received metric by name: (worker instance, data point), over all requests and workers."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for request in receiver.metrics():
        for rm in request.resource_metrics:
            instance = attributes(rm.resource.attributes)["service.instance.id"]
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    data = getattr(metric, metric.WhichOneof("data"))
                    out.setdefault(metric.name, []).extend((instance, point) for point in data.data_points)
    return out


@pytest.mark.slow
def test_otel_names_in_the_merged_scrape_and_over_otlp(receiver: OtlpReceiver) -> None:
    """Both workers' requests add up under http_server_request_duration_seconds in /metrics (which promtool
    accepts), and arrive at a real receiver as http.server.request.duration with the conventions' keys."""
    env = {
        "WEB_CONCURRENCY": "2",
        "OPSKIT_METRICS_NAMING": "otel",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_METRICS_EXPORTER": "prometheus,otlp",
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
        "OTEL_TRACES_EXPORTER": "none",
    }
    with opskit_serve(APP, env) as (process, port):
        pids = set()
        for _ in range(40):
            r = httpx.get(f"http://127.0.0.1:{port}/work", headers={"Connection": "close"}, timeout=10)
            pids.add(r.json()["pid"])
        assert len(pids) == 2
        scrape = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        process.send_signal(signal.SIGTERM)  # each worker exports once more on its way out
        assert process.wait(30) == 0, process.stderr()

    work = {"http_request_method": "GET", "http_route": "/work", "url_scheme": "http"}
    counts = [
        sample.value
        for family in text_string_to_metric_families(scrape)
        for sample in family.samples
        if sample.name == "http_server_request_duration_seconds_count" and work.items() <= sample.labels.items()
    ]
    assert counts == [40]
    assert "http_requests_total" not in scrape and "http_server_active_requests{" in scrape
    checked = subprocess.run([which("promtool"), "check", "metrics"], input=scrape, capture_output=True, text=True)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")

    received = _metrics(receiver)
    assert "http_requests_total" not in received and "http_request_duration_seconds" not in received
    points = [
        (instance, p)
        for instance, p in received["http.server.request.duration"]
        if attributes(p.attributes)["http.route"] == "/work"
    ]
    assert {tuple(attributes(p.attributes)) for _, p in points} == {SERVER}
    assert {attributes(p.attributes)["http.response.status_code"] for _, p in points} == {200}
    last: dict[str, Any] = {}  # cumulative: each worker's latest point is its total
    for instance, p in points:
        if instance not in last or p.time_unix_nano > last[instance].time_unix_nano:
            last[instance] = p
    assert len(last) == 2 and sum(p.count for p in last.values()) == 40
    active = received["http.server.active_requests"]
    assert {tuple(attributes(p.attributes)) for _, p in active} == {("http.request.method", "url.scheme")}
