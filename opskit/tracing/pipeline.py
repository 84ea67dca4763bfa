"""The export pipeline built from settings: resource, sampler, exporter, batch processor, provider.

Nothing here reads the environment: every value comes from :class:`opskit.settings.Settings`, and
the OpenTelemetry classes are given explicit arguments so their own environment defaults never apply.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from opskit.otlp.resource import resource_attributes
from opskit.otlp.transport import check_protocol, otlp_client
from opskit.version import VERSION

from .export_metrics import CountingExporter, TraceMetrics, count_drops, default_metrics

if TYPE_CHECKING:
    from opskit.settings import Settings

__all__ = [
    "Pipeline",
    "SCOPE",
    "build_exporter",
    "build_pipeline",
    "build_resource",
    "build_sampler",
    "check_settings",
]


SCOPE = InstrumentationScope("opskit.tracing", VERSION)


def check_settings(settings: Settings) -> None:
    """Fail at startup, naming the variable, on a choice this installation cannot honour."""
    if settings.traces_exporter_resolved == "otlp":
        check_protocol(settings, "traces")


def build_resource(settings: Settings) -> Resource:
    """service.*, deployment.environment, k8s.* and the worker's instance from settings over
    ``OTEL_RESOURCE_ATTRIBUTES``: the resource the metrics and logs of the process carry too."""
    return Resource(resource_attributes(settings))


def build_sampler(settings: Settings) -> Sampler:
    """The sampler named by ``OTEL_TRACES_SAMPLER`` with ``OTEL_TRACES_SAMPLER_ARG``."""
    name = settings.traces_sampler
    root: Sampler
    if name.endswith("traceidratio"):
        root = TraceIdRatioBased(settings.traces_sampler_arg)
    elif name.endswith("always_off"):
        root = ALWAYS_OFF
    else:
        root = ALWAYS_ON
    return ParentBased(root) if name.startswith("parentbased_") else root


def _one_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + "\n"


def build_exporter(settings: Settings) -> SpanExporter:
    """The span exporter chosen by ``OTEL_TRACES_EXPORTER`` (never called for ``none``)."""
    if settings.traces_exporter_resolved == "console":
        # One JSON object per line, like every other line opskit writes to stdout.
        return ConsoleSpanExporter(out=sys.stdout, formatter=_one_line)
    check_settings(settings)
    from .otlp import RequestSpanExporter

    return RequestSpanExporter(otlp_client(settings, "traces"), scope=SCOPE)


@dataclass(frozen=True)
class Pipeline:
    """One process's tracing pipeline: spans handed to ``processor`` are batched and exported."""

    provider: TracerProvider
    processor: BatchSpanProcessor
    sampler: Sampler
    resource: Resource

    def shutdown(self) -> None:
        """Export what is queued, then stop the exporter thread."""
        self.processor.force_flush()
        self.provider.shutdown()


def build_pipeline(settings: Settings, metrics: TraceMetrics | None = None) -> Pipeline:
    """Create the provider, its batch processor and exporter (this starts the export thread).

    Exported spans, failed exports and dropped spans are counted in ``metrics`` (by default the
    process registry's ``opskit_trace_*`` counters).
    """
    metrics = metrics if metrics is not None else default_metrics()
    metrics.create_series()
    resource = build_resource(settings)
    sampler = build_sampler(settings)
    processor = BatchSpanProcessor(
        CountingExporter(build_exporter(settings), metrics),
        max_queue_size=settings.bsp_max_queue_size,
        schedule_delay_millis=settings.bsp_schedule_delay_ms,
        max_export_batch_size=min(settings.bsp_max_export_batch_size, settings.bsp_max_queue_size),
        export_timeout_millis=settings.bsp_export_timeout_ms,
    )
    count_drops(processor, metrics)
    provider = TracerProvider(sampler=sampler, resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(processor)
    return Pipeline(provider=provider, processor=processor, sampler=sampler, resource=resource)
