"""What happens to finished spans, counted: exported, failed exports by reason, dropped spans by reason.

Nothing here runs per request. The exporter wrapper counts once per export batch, on the export
thread. Drops are counted by the batch processor's own drop hook, which the SDK calls only for a
span it refuses (queue full, or after shutdown): a span that is queued costs nothing more.
Export failures are also logged, at most one line per reason per interval, by the same throttled
log the rate limiter uses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .. import metrics as _metrics
from ..metrics.registry import Counter, CounterChild, Registry
from ..otlp.transport import FAILURE_REASONS, failure_reason
from ..throttle import ThrottledLog

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

__all__ = [
    "DROP_REASONS",
    "FAILURE_REASONS",
    "CountingExporter",
    "TraceMetrics",
    "count_drops",
    "failure_reason",
]

log = logging.getLogger("opskit.tracing")

DROP_REASONS = ("queue_full", "export_failed", "shutdown")
LOG_INTERVAL = 60.0
# The SDK's OTLP/HTTP exporter logs every failed or retried batch; opskit logs them, throttled, instead.


class TraceMetrics:
    """``opskit_trace_spans_exported_total``, ``opskit_trace_export_failures_total{reason}`` and
    ``opskit_trace_spans_dropped_total{reason}``; every label value comes from a fixed set."""

    def __init__(self, registry: Registry | None = None) -> None:
        registry = registry if registry is not None else _metrics.REGISTRY
        self._exported: Counter = registry.counter(
            "opskit_trace_spans_exported_total",
            "Spans the trace collector accepted.",
        )
        self._failures: Counter = registry.counter(
            "opskit_trace_export_failures_total",
            "Failed span export batches by reason (timeout, connection, http_4xx, http_5xx, http_other, other).",
            ["reason"],
        )
        self._dropped: Counter = registry.counter(
            "opskit_trace_spans_dropped_total",
            "Spans lost before reaching the collector, by reason (queue_full, export_failed, shutdown).",
            ["reason"],
        )

    def create_series(self) -> None:
        """Create every series at zero, so ``rate()`` and alerts see a value before the first failure."""
        self._exported.labels()
        for reason in FAILURE_REASONS:
            self._failure(reason)
        for reason in DROP_REASONS:
            self._drop(reason)

    # Counting happens once per export batch, never per request: the registry's own child lookup is enough.
    def _failure(self, reason: str) -> CounterChild:
        return self._failures.labels(reason)

    def _drop(self, reason: str) -> CounterChild:
        return self._dropped.labels(reason)

    def exported(self, count: int) -> None:
        """Count ``count`` spans the collector accepted."""
        self._exported.labels().inc(count)

    def export_failed(self, reason: str, spans: int) -> None:
        """Count one failed batch of ``spans`` spans (``reason`` from :data:`FAILURE_REASONS`)."""
        self._failure(reason).inc()
        if spans:
            self._drop("export_failed").inc(spans)

    def dropped(self, reason: str, count: int = 1) -> None:
        """Count ``count`` spans dropped for ``reason`` (from :data:`DROP_REASONS`)."""
        self._drop(reason).inc(count)


_default: TraceMetrics | None = None


def default_metrics() -> TraceMetrics:
    """The process-wide instance, in the registry ``/metrics`` exposes."""
    global _default
    if _default is None:
        _default = TraceMetrics()
    return _default


class CountingExporter(SpanExporter):
    """Wraps the real exporter: counts each batch's result and logs failures at a bounded rate.

    The wrapped exporter may say why a batch failed through a ``last_failure`` attribute (one of
    :data:`FAILURE_REASONS`); an exception it raises is classified by :func:`failure_reason`.
    """

    def __init__(self, exporter: SpanExporter, metrics: TraceMetrics, log_interval: float = LOG_INTERVAL) -> None:
        self.exporter = exporter
        self.metrics = metrics
        self.log = ThrottledLog(log, log_interval)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        count = len(spans)
        try:
            result = self.exporter.export(spans)
        except Exception as error:  # the export thread must outlive any exporter bug
            reason = failure_reason(None, error)
            self._failed(reason, count, f"{type(error).__name__}")
            return SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.metrics.exported(count)
        else:
            reason = getattr(self.exporter, "last_failure", None) or "other"
            self._failed(reason, count, getattr(self.exporter, "last_failure_detail", None) or "")
        return result

    def _failed(self, reason: str, count: int, detail: str) -> None:
        self.metrics.export_failed(reason, count)
        self.log.warning(
            f"export:{reason}",
            f"tracing: exporting {count} spans failed ({reason}{': ' + detail if detail else ''}); "
            "the app goes on, these spans are lost",
        )

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class _DropHook:
    """Stands in for the batch processor's internal metrics: the SDK calls it per dropped span, per batch."""

    def __init__(self, previous: object, metrics: TraceMetrics) -> None:
        self._previous = previous
        self._metrics = metrics

    def register_queue_size(self, get_queue_size: Callable[[], int]) -> None:
        getattr(self._previous, "register_queue_size", lambda _: None)(get_queue_size)

    def drop_items(self, count: int, error_type: str = "queue_full") -> None:
        self._metrics.dropped("shutdown" if error_type == "already_shutdown" else "queue_full", count)
        getattr(self._previous, "drop_items", lambda *_: None)(count, error_type)

    def finish_items(self, count: int) -> None:
        getattr(self._previous, "finish_items", lambda _: None)(count)


def count_drops(processor: BatchSpanProcessor, metrics: TraceMetrics) -> bool:
    """Count the spans ``processor`` drops into ``metrics``; False when this SDK version offers no hook.

    The SDK's batch processor (1.33 and later) reports each refused span to its metrics object, and
    only then: replacing that object costs nothing while the queue has room.
    """
    batch = getattr(processor, "_batch_processor", None)
    previous = getattr(batch, "_metrics", None)
    if batch is None or previous is None or not hasattr(previous, "drop_items"):
        log.info("tracing: this OpenTelemetry SDK does not report dropped spans; they are not counted")
        return False
    if not isinstance(previous, _DropHook):
        batch._metrics = _DropHook(previous, metrics)
    return True
