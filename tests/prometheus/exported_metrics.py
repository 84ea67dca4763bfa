"""The metrics opskit exports, in one place: the dashboards, rules and their tests build on these.

A rename in the package is one edit here; the tests then point at every dashboard panel and rule
that still uses the old name. ``EXTERNAL`` lists the series other exporters provide (Prometheus's
own ``up``, kube-state-metrics, cAdvisor): the scaling dashboard reads them, a local stack has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from opskit.metrics.naming import Naming, families

MetricType = Literal["counter", "gauge", "histogram", "info"]

# Labels Prometheus adds to every series of a scraped opskit pod (kube-prometheus ServiceMonitor relabelling).
TARGET_LABELS = ("job", "namespace", "service", "pod", "instance")

# Status codes, routes and decisions are label values the code produces; rules and panels select on them.
RATELIMIT_DECISIONS = ("allowed", "limited", "error_allowed", "error_rejected")


@dataclass(frozen=True)
class Metric:
    """One metric family as the exposition names it (histograms without their suffixes)."""

    name: str
    type: MetricType
    labels: tuple[str, ...]

    def series_names(self) -> tuple[str, ...]:
        """The sample names of the family as Prometheus stores them."""
        if self.type == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


EXPORTED = (
    Metric("http_requests_total", "counter", ("method", "route", "status")),
    Metric("http_request_duration_seconds", "histogram", ("method", "route")),
    Metric("http_requests_in_progress", "gauge", ("method", "route")),
    Metric("http_request_size_bytes", "histogram", ("method", "route")),
    Metric("http_response_size_bytes", "histogram", ("method", "route")),
    Metric("http_exceptions_total", "counter", ("method", "route", "exception_type")),
    Metric("opskit_build_info", "info", ("version", "service")),
    Metric("http_response_first_byte_seconds", "histogram", ("method", "route")),
    Metric("websocket_connections_opened_total", "counter", ("route",)),
    Metric("websocket_connections_open", "gauge", ("route",)),
    Metric("websocket_connection_duration_seconds", "histogram", ("route",)),
    Metric("websocket_messages_total", "counter", ("route", "direction")),
    Metric("opskit_metrics_label_overflow_total", "counter", ("label",)),
    Metric("opskit_access_log_skipped_total", "counter", ()),
    Metric("opskit_ratelimit_decisions_total", "counter", ("policy", "decision")),
    Metric("opskit_ratelimit_backend_duration_seconds", "histogram", ()),
    Metric("opskit_ratelimit_backend_errors_total", "counter", ("reason",)),
    Metric("opskit_trace_spans_exported_total", "counter", ()),
    Metric("opskit_trace_export_failures_total", "counter", ("reason",)),
    Metric("opskit_trace_spans_dropped_total", "counter", ("reason",)),
    Metric("opskit_event_loop_lag_seconds", "histogram", ()),
    Metric("opskit_event_loop_current_lag_seconds", "gauge", ()),
    Metric("opskit_event_loop_blocked_total", "counter", ("route",)),
    Metric("opskit_event_loop_blocked_seconds", "histogram", ()),
    Metric("opskit_runtime_warnings_suppressed_total", "counter", ("kind",)),
    Metric("opskit_threadpool_busy_threads", "gauge", ()),
    Metric("opskit_threadpool_waiting_tasks", "gauge", ()),
    Metric("opskit_threadpool_max_threads", "gauge", ()),
    Metric("opskit_threadpool_wait_seconds", "histogram", ()),
    Metric("opskit_background_task_duration_seconds", "histogram", ("task",)),
    Metric("opskit_background_task_failures_total", "counter", ("task",)),
    Metric("opskit_event_loop_busy_ratio", "gauge", ()),
    Metric("opskit_requests_shed_total", "counter", ("reason",)),
    Metric("opskit_in_flight_requests", "gauge", ()),
    Metric("opskit_in_flight_limit", "gauge", ()),
    Metric("opskit_saturation", "gauge", ()),
    Metric("http_request_queue_seconds", "histogram", ()),
    Metric("opskit_request_queue_time_ignored_total", "counter", ("reason",)),
)

EXTERNAL = (
    "up",
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_status_desired_replicas",
    "kube_horizontalpodautoscaler_spec_min_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas",
    "kube_pod_container_resource_limits",
    "container_cpu_usage_seconds_total",
    "container_cpu_cfs_throttled_periods_total",
    "container_cpu_cfs_periods_total",
    "container_memory_working_set_bytes",
)

# Series of the trace export pipeline: present only when the service exports spans.
TRACE_EXPORT = tuple(metric.name for metric in EXPORTED if metric.name.startswith("opskit_trace_"))

# Series only a Kubernetes cluster has: a local scrape of opskit cannot give them data.
KUBERNETES_ONLY = tuple(name for name in EXTERNAL if name != "up")


def exported(naming: Naming = "prometheus") -> tuple[Metric, ...]:
    """The exported families under ``naming``: with ``otel``, the HTTP ones as opskit's family table names them."""
    if naming == "prometheus":
        return EXPORTED
    by_name = {family.name: role for role, family in families("prometheus").items()}
    otel = families("otel")
    out: list[Metric] = []
    for metric in EXPORTED:
        role = by_name.get(metric.name)
        if role is None:
            out.append(metric)
        elif role in otel:
            family = otel[role]
            out.append(Metric(family.name, metric.type, family.labels))
    return tuple(out)


def exported_series(naming: Naming = "prometheus") -> frozenset[str]:
    """Every series name an opskit process exposes."""
    return frozenset(series for metric in exported(naming) for series in metric.series_names())
