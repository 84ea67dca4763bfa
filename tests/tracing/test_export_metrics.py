"""Export failures and dropped spans are counted and logged at a bounded rate; the app keeps serving."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, TraceFlags
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

import opskit.tracing
from opskit.metrics import REGISTRY, Registry
from opskit.metrics.exposition import render
from opskit.otlp.transport import OtlpHttpClient, otlp_client
from opskit.settings import load_settings
from opskit.tracing.export_metrics import (
    CountingExporter,
    TraceMetrics,
    count_drops,
    failure_reason,
)
from opskit.tracing.otlp import RequestSpanExporter
from opskit.tracing.pipeline import SCOPE, build_pipeline
from tests.servers import free_port
from tests.tracing.app import create
from tests.tracing.receiver import OtlpReceiver, otlp_receiver

Counts = dict[tuple[str, str], float]


def counts(registry: Registry | None = None) -> Counts:
    """Every ``opskit_trace_*`` sample, by name and reason."""
    text = render((registry or REGISTRY).collect(), openmetrics=False).decode()
    out: Counts = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("opskit_trace_"):
                out[(s.name, s.labels.get("reason", ""))] = float(s.value)
    return out


def delta(before: Counts, after: Counts) -> Counts:
    """What changed, without the zeros."""
    return {key: value - before.get(key, 0.0) for key, value in after.items() if value != before.get(key, 0.0)}


EXPORTED = ("opskit_trace_spans_exported_total", "")


def failures(reason: str) -> tuple[str, str]:
    return ("opskit_trace_export_failures_total", reason)


def dropped(reason: str) -> tuple[str, str]:
    return ("opskit_trace_spans_dropped_total", reason)


def serve(endpoint: str, requests_count: int, **overrides: Any) -> Counts:
    """Serve ``requests_count`` requests exporting to ``endpoint``, flush, return the counter changes."""
    before = counts()
    c = TestClient(create(otlp_endpoint=endpoint, **overrides))
    for i in range(requests_count):
        assert c.get(f"/items/{i}").status_code == 200  # tracing degrades, the app serves
    opskit.tracing.shutdown()
    return delta(before, counts())


class Lines(logging.Handler):
    """Collects the records of one logger."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger(name)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def tracing_log() -> Iterator[Lines]:
    lines = Lines("opskit.tracing")
    lines.logger.addHandler(lines)
    yield lines
    lines.logger.removeHandler(lines)


def span(n: int) -> ReadableSpan:
    context = SpanContext(n + 1, n + 1, False, TraceFlags(TraceFlags.SAMPLED))
    return ReadableSpan(name="s", context=context, resource=Resource({}), instrumentation_scope=SCOPE)


class TestCountedExport:
    """Each collector failure mode increments the counter of its reason."""

    def test_accepted_spans_are_counted(self, receiver: OtlpReceiver) -> None:
        """Spans the collector accepts count as exported; nothing counts as failed or dropped."""
        assert serve(receiver.endpoint, 3) == {EXPORTED: 3}
        assert len(receiver.spans()) == 3

    def test_collector_down(self) -> None:
        """A closed port counts a connection failure, and its spans as dropped (export_failed)."""
        changes = serve(f"http://127.0.0.1:{free_port()}", 4, otlp_traces_timeout_ms=300)
        assert changes == {failures("connection"): 1, dropped("export_failed"): 4}

    @pytest.mark.parametrize("status", [500, 503, 400])
    def test_collector_answers_an_error(self, status: int) -> None:
        """A 5xx (retried within the timeout, then given up) or 4xx counts under its status class."""
        with otlp_receiver(status=status) as receiver:
            changes = serve(receiver.endpoint, 2, otlp_traces_timeout_ms=300)
        assert changes == {failures(f"http_{status // 100}xx"): 1, dropped("export_failed"): 2}
        assert receiver.attempts >= 1

    def test_collector_hangs(self) -> None:
        """A collector that never answers counts a timeout once the export timeout passed."""
        with otlp_receiver(hang=True) as receiver:
            changes = serve(receiver.endpoint, 2, otlp_traces_timeout_ms=200)
        assert changes == {failures("timeout"): 1, dropped("export_failed"): 2}

    def test_queue_overflow(self) -> None:
        """Spans refused by a full queue count as dropped (queue_full); every span is accounted for once."""
        with otlp_receiver(hang=True) as receiver:
            changes = serve(
                receiver.endpoint,
                12,
                otlp_traces_timeout_ms=1000,
                bsp_max_queue_size=2,
                bsp_max_export_batch_size=2,
                bsp_schedule_delay_ms=60_000,
            )
        assert changes.get(dropped("queue_full"), 0) >= 6  # at most 2 queued + 2 in export + 2 moving
        assert changes[dropped("queue_full")] + changes[dropped("export_failed")] == 12
        assert set(changes) == {dropped("queue_full"), dropped("export_failed"), failures("timeout")}


class TestBoundedLog:
    """Failures are logged, once per reason per interval."""

    def test_one_line_per_reason_per_interval(self, tracing_log: Lines) -> None:
        """Five failed batches: five counted, one warning line naming the reason."""
        registry = Registry(None)
        metrics = TraceMetrics(registry)
        settings = load_settings(otlp_endpoint=f"http://127.0.0.1:{free_port()}", otlp_traces_timeout_ms=200)
        exporter = RequestSpanExporter(otlp_client(settings, "traces"), scope=SCOPE)
        counting = CountingExporter(exporter, metrics)
        try:
            for n in range(5):
                counting.export([span(n)])
            assert counts(registry)[failures("connection")] == 5
        finally:
            counting.shutdown()
            registry.close()
        warnings = [r for r in tracing_log.records if "exporting" in r.getMessage()]
        assert len(warnings) == 1
        assert "connection" in warnings[0].getMessage()

    def test_an_exporter_that_raises_is_counted(self, tracing_log: Lines) -> None:
        """An exception from the exporter is a failure of its reason, never an export thread crash."""

        class Raising(RequestSpanExporter):
            def export(self, spans: Any) -> Any:
                raise requests.exceptions.ReadTimeout("slow")

        registry = Registry(None)
        exporter = Raising(OtlpHttpClient("http://127.0.0.1:1/v1/traces"), scope=SCOPE)
        counting = CountingExporter(exporter, TraceMetrics(registry))
        try:
            counting.export([span(1), span(2)])
            assert delta({}, counts(registry)) == {failures("timeout"): 1, dropped("export_failed"): 2}
        finally:
            counting.shutdown()
            registry.close()


class TestFailureReason:
    """Reasons are a fixed set: status class, timeout, connection, other."""

    @pytest.mark.parametrize(
        ("status", "error", "reason"),
        [
            (503, None, "http_5xx"),
            (500, None, "http_5xx"),
            (404, None, "http_4xx"),
            (302, None, "http_other"),
            (None, requests.exceptions.ConnectTimeout(), "timeout"),
            (None, requests.exceptions.ReadTimeout(), "timeout"),
            (None, TimeoutError(), "timeout"),
            (None, requests.exceptions.ConnectionError(), "connection"),
            (None, ConnectionRefusedError(), "connection"),
            (None, ValueError("x"), "other"),
            (None, None, "other"),
        ],
    )
    def test_mapping(self, status: int | None, error: Exception | None, reason: str) -> None:
        """Each status or exception maps to its bounded reason."""
        assert failure_reason(status, error) == reason


class CallCounting(TraceMetrics):
    calls = 0

    def dropped(self, reason: str, count: int = 1) -> None:
        self.calls += 1
        super().dropped(reason, count)


class TestDropCounting:
    """The batch processor's drop hook: installed on this SDK, silent while the queue has room."""

    def test_hook_installed_and_silent_while_the_queue_has_room(self) -> None:
        """Ending spans with room in the queue calls nothing of opskit's; a full queue counts each refusal."""
        registry = Registry(None)
        metrics = CallCounting(registry)
        settings = load_settings(
            otlp_endpoint=f"http://127.0.0.1:{free_port()}",
            bsp_max_queue_size=4,
            bsp_schedule_delay_ms=600_000,
            bsp_max_export_batch_size=4,
        )
        pipeline = build_pipeline(settings, metrics)
        try:
            assert count_drops(pipeline.processor, metrics)
            for n in range(3):
                pipeline.processor.on_end(span(n))
            assert metrics.calls == 0
        finally:
            pipeline.provider.shutdown()
        pipeline.processor.on_end(span(9))  # after shutdown
        assert metrics.calls == 1
        assert counts(registry)[dropped("shutdown")] == 1
        registry.close()
