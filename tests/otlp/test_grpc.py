"""OTLP over gRPC: spans, metrics and log records reach a real gRPC collector; failures counted, never raised."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import opentelemetry.trace
import pytest
from starlette.testclient import TestClient

import opskit
import opskit.tracing
from opskit.logging.otlp import OtlpLogs, create_component
from opskit.logging.writer import WRITER
from opskit.metrics.otlp import OtlpMetrics
from opskit.metrics.registry import Registry
from opskit.otlp.grpc_client import OtlpGrpcClient
from opskit.otlp.transport import otlp_client
from opskit.runtime import Runtime
from opskit.settings import load_settings
from tests.otlp.grpc_receiver import OtlpGrpcReceiver, otlp_grpc_receiver
from tests.servers import free_port
from tests.tracing.app import create
from tests.tracing.receiver import attributes


@pytest.fixture
def receiver() -> Iterator[OtlpGrpcReceiver]:
    with otlp_grpc_receiver() as r:
        yield r


@pytest.fixture
def registry() -> Iterator[Registry]:
    r = Registry(None)
    yield r
    r.close()


@pytest.fixture(autouse=True)
def _untapped_writer() -> Iterator[None]:
    yield
    WRITER.tap = None
    WRITER.stdout = True


def _counts(registry: Registry, name: str) -> dict[str, float]:
    for metric, series in registry.collect():
        if metric.name == name:
            return {(s.labels[0] if s.labels else ""): s.data.values[0] for s in series if s.data.values[0]}
    return {}


class TestClientChoice:
    def test_grpc_protocol_builds_the_grpc_client_per_signal(self) -> None:
        """The generic protocol applies to every signal; a signal's own variable wins; the base endpoint is
        used as given over gRPC (no /v1/ path)."""
        settings = load_settings(otlp_endpoint="http://collector:4317", otlp_logs_protocol="grpc")
        logs = otlp_client(settings, "logs")
        assert isinstance(logs, OtlpGrpcClient)
        assert logs.endpoint == "http://collector:4317"
        assert otlp_client(settings, "metrics").endpoint == "http://collector:4317/v1/metrics"
        logs.close()


class TestSignals:
    def test_spans_over_grpc(self, receiver: OtlpGrpcReceiver) -> None:
        """OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc: request spans arrive with their attributes and the
        headers as gRPC metadata."""
        app = create(otlp_endpoint=receiver.endpoint, otlp_traces_protocol="grpc", otlp_traces_headers="X-Team=core")
        TestClient(app).get("/items/7")
        opskit.tracing.shutdown()
        spans = receiver.wait_for(1)
        request = next(s for s in spans if s.kind == opentelemetry.trace.SpanKind.SERVER.value + 1)
        assert request.name == "GET /items/{item_id}"
        assert request.attributes["url.path"] == "/items/7"
        assert receiver.requests[0]["x-team"] == "core"

    def test_metrics_over_grpc(self, registry: Registry, receiver: OtlpGrpcReceiver) -> None:
        """A metric export over gRPC (gzip) is decoded by the collector: names, points, resource."""
        registry.counter("app_requests_total", "Requests.", ["route"]).labels("/a").inc(3)
        settings = load_settings(
            metrics_exporter=("otlp",),
            otlp_endpoint=receiver.endpoint,
            otlp_metrics_protocol="grpc",
            otlp_metrics_compression="gzip",
            service_name="shop",
        )
        OtlpMetrics(registry, settings).export()
        (request,) = receiver.metrics()
        (resource_metrics,) = request.resource_metrics
        assert attributes(resource_metrics.resource.attributes)["service.name"] == "shop"
        metrics = {m.name: m for sm in resource_metrics.scope_metrics for m in sm.metrics}
        (point,) = metrics["app_requests_total"].sum.data_points
        assert point.as_double == 3
        assert _counts(registry, "opskit_metrics_otlp_exports_total") == {"": 1}

    def test_log_records_over_grpc(self, receiver: OtlpGrpcReceiver) -> None:
        """Every written line becomes a log record at the gRPC collector: severity, body, attributes."""
        settings = load_settings(
            logs_exporter="otlp", otlp_logs_endpoint=receiver.endpoint, otlp_logs_protocol="grpc", service_name="shop"
        )
        opskit.configure_logging(settings, stream=io.BytesIO())
        component = create_component(Runtime(settings))
        assert component is not None
        component.process_started()
        opskit.get_logger("shop.orders").info("paid", amount=3)
        logging.getLogger("somelib.db").error("slow query")
        component._stop()
        records = [
            r
            for request in receiver.logs()
            for rl in request.resource_logs
            for sl in rl.scope_logs
            for r in sl.log_records
        ]
        assert [(r.severity_text, r.body.string_value) for r in records] == [("INFO", "paid"), ("ERROR", "slow query")]
        assert attributes(records[0].attributes)["amount"] == 3


class TestFailures:
    @pytest.mark.parametrize(
        ("code", "reason", "retried"),
        [
            (grpc.StatusCode.UNAVAILABLE, "connection", True),
            (grpc.StatusCode.INVALID_ARGUMENT, "other", False),
            (grpc.StatusCode.PERMISSION_DENIED, "other", False),
        ],
    )
    def test_a_failing_collector_is_counted_by_reason(
        self, registry: Registry, code: grpc.StatusCode, reason: str, retried: bool
    ) -> None:
        """A transient status is retried within the timeout, any other is final; the batch is counted as
        failed and dropped, the export returns."""
        with otlp_grpc_receiver(code) as receiver:
            settings = load_settings(
                logs_exporter="otlp",
                otlp_endpoint=receiver.endpoint,
                otlp_logs_protocol="grpc",
                otlp_logs_timeout_ms=1500,
            )
            exporter = OtlpLogs(settings, registry)
            exporter.queue.put(b'{"event":"x","level":"info"}\n')
            exporter.export()
            attempts = receiver.attempts
        assert _counts(registry, "opskit_log_export_failures_total") == {reason: 1}
        assert _counts(registry, "opskit_log_records_dropped_total") == {"export_failed": 1}
        assert (attempts > 1) is retried

    def test_collector_down(self, registry: Registry) -> None:
        """Nothing listening: a connection failure, counted; the export gives up at its timeout."""
        settings = load_settings(
            metrics_exporter=("otlp",),
            otlp_endpoint=f"http://127.0.0.1:{free_port()}",
            otlp_metrics_protocol="grpc",
            otlp_metrics_timeout_ms=300,
        )
        OtlpMetrics(registry, settings).export()
        assert _counts(registry, "opskit_metrics_otlp_export_failures_total") == {"connection": 1}

    def test_result_of_a_direct_call(self, receiver: OtlpGrpcReceiver) -> None:
        """The client sends the bytes it is given as the request: an empty request is a valid export."""
        client = OtlpGrpcClient(receiver.endpoint, "logs", timeout=2)
        result: Any = client.export(b"")
        client.close()
        assert (result.ok, result.attempts) == (True, 1)
        assert len(receiver.logs()) == 1


def _goaway_export(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """One gRPC export to a collector that answers with a GOAWAY, in a fresh process (see tests.otlp.goaway)."""
    base = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    return subprocess.run(
        [sys.executable, "-m", "tests.otlp.goaway", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


class TestCoreLogLines:
    def test_the_grpc_core_info_lines_stay_off_stderr(self) -> None:
        """GRPC_VERBOSITY unset: opskit's client defaults it to ERROR, and the C core's INFO line about the
        GOAWAY (plain text, not JSON) is not written."""
        done = _goaway_export()
        assert done.stdout.strip() == "ok=False GRPC_VERBOSITY=ERROR"
        assert "Got goaway" not in done.stderr

    def test_without_the_default_the_line_is_written(self) -> None:
        """The same export in a process that imported grpc before opskit's client: the C core had read no
        verbosity, and it writes the INFO line (the line the default keeps away is real)."""
        done = _goaway_export("--grpc-first")
        assert "Got goaway" in done.stderr

    def test_a_verbosity_the_user_chose_is_kept(self) -> None:
        """GRPC_VERBOSITY=INFO set by the user stays INFO: the C core's lines are written."""
        done = _goaway_export(GRPC_VERBOSITY="INFO")
        assert done.stdout.strip() == "ok=False GRPC_VERBOSITY=INFO"
        assert "Got goaway" in done.stderr
