"""OTLP metrics: every worker pushes its own values to a collector, off the event loop.

``OTEL_METRICS_EXPORTER=otlp`` (alone, or with ``prometheus``) starts one export thread per
worker. Every ``OTEL_METRIC_EXPORT_INTERVAL`` it copies the worker's own store (not the merged
directory: the collector adds the workers up, each one its own ``service.instance.id``), turns
counters into monotonic sums, gauges into gauges and histograms into explicit-bucket histograms
with the store's real bounds, and POSTs one ``ExportMetricsServiceRequest``.

Temporality follows ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` per instrument as the
specification defines it: ``cumulative`` for all; ``delta`` and ``lowmemory`` make synchronous
counters and histograms deltas (opskit has no asynchronous counters, so the two agree) and keep
gauges as last values. A delta export leaves out the series that did not change; one the
collector did not accept is not lost: the next covers its interval too. Exemplars are the trace
IDs the store recorded per counter and per bucket, each sent once, with the export after it was
recorded.

Encoding uses opentelemetry-proto's generated classes: it runs once per interval, on the export
thread, so the hand-written fast path of the span encoder would buy nothing here.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Exemplar,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from ..component import Component
from ..otlp import FAILURE_REASONS, ExportThread, OtlpClient, check_protocol, otlp_client, resource_attributes
from ..throttle import ThrottledLog
from ..version import VERSION
from .layout import Exemplar as StoredExemplar
from .multiprocess import merge_buffers
from .naming import INT_ATTRIBUTES, OPTIONAL_ATTRIBUTES
from .registry import Counter, Histogram, Registry

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..settings import Settings

__all__ = ["OtlpMetrics", "OtlpMetricsComponent", "check_settings", "create_component"]

log = logging.getLogger("opskit.metrics")

SCOPE = "opskit.metrics"
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_UNITS = (("_seconds", "s"), ("_bytes", "By"))
LOG_INTERVAL = 60.0

_process_start_ns = time.time_ns()


def _forked() -> None:
    global _process_start_ns
    _process_start_ns = time.time_ns()  # a worker's store starts from zero when it is forked


os.register_at_fork(after_in_child=_forked)


def check_settings(settings: Settings) -> None:
    """Fail at startup, naming the variable, on a protocol opskit cannot send metrics with."""
    if settings.metrics_otlp:
        check_protocol(settings, "metrics")


def _unit(name: str) -> str:
    base = name.removesuffix("_total")
    return next((unit for suffix, unit in _UNITS if base.endswith(suffix)), "")


def _attributes(names: Sequence[str], values: Sequence[str]) -> list[KeyValue]:
    return [_attribute(k, v) for k, v in zip(names, values, strict=True) if v or k not in OPTIONAL_ATTRIBUTES]


def _attribute(key: str, value: str) -> KeyValue:
    if key in INT_ATTRIBUTES and value.isdigit():
        return KeyValue(key=key, value=AnyValue(int_value=int(value)))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _trace_id(text: str) -> bytes | None:
    if len(text) != 32:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


class OtlpMetrics:
    """Builds and sends one worker's ``ExportMetricsServiceRequest``; counts how exports went.

    Not thread-safe: one export thread calls :meth:`export`.
    """

    def __init__(self, registry: Registry, settings: Settings, client: OtlpClient | None = None) -> None:
        self.registry = registry
        self.settings = settings
        self.delta = settings.otlp_metrics_temporality in ("delta", "lowmemory")
        self.client = client or otlp_client(settings, "metrics")
        self._exports = registry.counter("opskit_metrics_otlp_exports_total", "Metric exports the collector accepted.")
        self._failures = registry.counter(
            "opskit_metrics_otlp_export_failures_total",
            "Failed metric exports by reason (timeout, connection, http_4xx, http_5xx, http_other, other).",
            ["reason"],
        )
        self._exports.labels()
        for reason in FAILURE_REASONS:
            self._failures.labels(reason)
        self._log = ThrottledLog(log, LOG_INTERVAL)
        self._resource: tuple[int, Resource] | None = None
        self._previous: dict[bytes, list[float]] = {}  # delta: the values sent last, by series
        self._last_ns = 0  # the end of the interval sent last
        self._exemplars_after = 0.0  # unix time: exemplars up to it were sent
        self._pending: tuple[dict[bytes, list[float]], int] | None = None  # the baseline once accepted

    def _resource_of_process(self) -> Resource:
        pid = os.getpid()
        if self._resource is None or self._resource[0] != pid:
            attributes = [
                KeyValue(key=k, value=AnyValue(int_value=v) if isinstance(v, int) else AnyValue(string_value=v))
                for k, v in resource_attributes(self.settings).items()
            ]
            self._resource = (pid, Resource(attributes=attributes))
        return self._resource[1]

    def _exemplar(self, stored: StoredExemplar | None) -> list[Exemplar]:
        if stored is None or stored[2] <= self._exemplars_after:
            return []
        trace_id = _trace_id(stored[0])
        if trace_id is None:
            return []
        return [Exemplar(time_unix_nano=int(stored[2] * 1e9), as_double=stored[1], trace_id=trace_id)]

    def collect(self, now_ns: int | None = None, *, commit: bool = True) -> ExportMetricsServiceRequest:
        """This worker's metrics as one request.

        With ``commit`` the next request starts where this one ends (delta values, exemplars);
        without, only :meth:`commit` does that: a delta export that failed is sent again, grown,
        with the next one instead of being lost.
        """
        now_ns = now_ns if now_ns is not None else time.time_ns()
        merged = merge_buffers([self.registry.store.snapshot()])
        by_name: dict[str, list[tuple[bytes, tuple[str, ...], Any]]] = {}
        for key, data in merged.items():
            name, values = orjson.loads(key)
            by_name.setdefault(name, []).append((key, tuple(values), data))
        start_ns = self._last_ns if self.delta and self._last_ns else _process_start_ns
        temporality = DELTA if self.delta else CUMULATIVE
        metrics: list[Metric] = []
        baseline: dict[bytes, list[float]] = {}
        for definition in self.registry.metrics():
            n_values = definition._shape()[0]
            series = [s for s in by_name.get(definition.name, []) if len(s[1]) == len(definition.labelnames)]
            series = [s for s in series if len(s[2].values) == n_values]
            series.sort(key=lambda s: s[1])
            unit = definition.unit if definition.unit is not None else _unit(definition.name)
            metric = Metric(name=definition.otlp_name, description=definition.documentation, unit=unit)
            for key, labels, data in series:
                values = data.values
                if definition.kind == "gauge":
                    metric.gauge.data_points.append(
                        NumberDataPoint(
                            attributes=_attributes(definition.attribute_keys, labels),
                            time_unix_nano=now_ns,
                            as_double=values[0],
                        )
                    )
                    continue
                shown = values
                if self.delta:
                    before = self._previous.get(key)
                    baseline[key] = list(values)
                    if before is not None:
                        shown = [a - b for a, b in zip(values, before, strict=True)]
                    if not any(shown):
                        continue
                if isinstance(definition, Counter):
                    metric.sum.data_points.append(
                        NumberDataPoint(
                            attributes=_attributes(definition.attribute_keys, labels),
                            start_time_unix_nano=start_ns,
                            time_unix_nano=now_ns,
                            as_double=shown[0],
                            exemplars=self._exemplar(data.exemplars[0] if data.exemplars else None),
                        )
                    )
                elif isinstance(definition, Histogram):
                    n = len(definition.bounds) + 1
                    exemplars = [e for stored in data.exemplars[:n] for e in self._exemplar(stored)]
                    metric.histogram.data_points.append(
                        HistogramDataPoint(
                            attributes=_attributes(definition.attribute_keys, labels),
                            start_time_unix_nano=start_ns,
                            time_unix_nano=now_ns,
                            count=round(sum(shown[:n])),
                            sum=shown[n],
                            bucket_counts=[round(c) for c in shown[:n]],
                            explicit_bounds=definition.bounds,
                            exemplars=exemplars,
                        )
                    )
            if metric.HasField("sum"):
                metric.sum.aggregation_temporality = temporality
                metric.sum.is_monotonic = True
            elif metric.HasField("histogram"):
                metric.histogram.aggregation_temporality = temporality
            elif not metric.HasField("gauge"):
                continue  # no series yet, or (delta) none changed
            metrics.append(metric)
        request = ExportMetricsServiceRequest()
        resource_metrics = request.resource_metrics.add()
        resource_metrics.resource.CopyFrom(self._resource_of_process())
        scope_metrics = resource_metrics.scope_metrics.add()
        scope_metrics.scope.CopyFrom(InstrumentationScope(name=SCOPE, version=VERSION))
        scope_metrics.metrics.extend(metrics)
        self._pending = (baseline, now_ns)
        if commit:
            self.commit()
        return request

    def commit(self) -> None:
        """The last collected request was accepted: the next one starts where it ended."""
        if self._pending is None:
            return
        baseline, now_ns = self._pending
        self._previous.update(baseline)
        self._last_ns = now_ns
        self._exemplars_after = now_ns / 1e9  # exemplars recorded from now on go with the next export
        self._pending = None

    def export(self, stop: threading.Event | None = None) -> None:
        """Collect and send (``stop`` ends retries early); a failure is counted, logged at a bounded
        rate, and never raised."""
        body = self.collect(commit=False).SerializeToString()
        result = self.client.export(body, stop)
        if result.ok:
            self.commit()
            self._exports.labels().inc()
            return
        reason = result.reason or "other"
        self._failures.labels(reason).inc()
        detail = f": {result.detail}" if result.detail else ""
        self._log.warning(
            f"export:{reason}",
            f"metrics: OTLP export failed ({reason}{detail}); the app goes on, the next export sends these values too",
        )


class OtlpMetricsComponent(Component):
    """Runs this worker's metric export thread: started once per serving process (lifespan startup
    or first request), stopped (after a last export) at lifespan shutdown or interpreter exit."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        check_settings(settings)
        self.exporter = OtlpMetrics(runtime.registry, settings)
        interval = settings.metric_export_interval_ms / 1000
        self.thread = ExportThread("opskit-otlp-metrics", interval, self.exporter.export)
        atexit.register(self.thread.stop)

    def process_started(self) -> None:
        self.thread.start()

    async def shutdown(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.thread.stop)


def create_component(runtime: Runtime) -> OtlpMetricsComponent | None:
    """The OTLP metrics exporter of this worker, when ``OTEL_METRICS_EXPORTER`` names ``otlp``."""
    settings = runtime.settings
    if not (settings.metrics_enabled and settings.metrics_otlp):
        return None
    return OtlpMetricsComponent(runtime)
