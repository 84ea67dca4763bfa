"""Settings of OTLP export for metrics and logs: the standard ``OTEL_*`` variables.

Where and how each signal is sent (endpoint, protocol, headers, timeout, compression) is the one
field set of :mod:`.otlp_export`, declared here for metrics and logs as tracing declares it for
spans; what is left here is what only metrics or logs have.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from ._base import SettingsSection, env
from .otlp_export import KeyValueText, OtlpCompression, OtlpProtocol, OtlpUrl, check_otlp_url, otlp_field

__all__ = ["METRICS_EXPORTERS", "LogsExporter", "OtlpSettings", "TemporalityPreference", "check_otlp_url"]

TemporalityPreference = Literal["cumulative", "delta", "lowmemory"]
LogsExporter = Literal["otlp", "none"]
StrTuple = Annotated[tuple[str, ...], NoDecode]
METRICS_EXPORTERS = ("prometheus", "otlp", "none")


class OtlpSettings(SettingsSection):
    """OTLP export of metrics and log records, beside (or instead of) Prometheus and stdout."""

    metrics_exporter: StrTuple = Field(
        ("prometheus",),
        validation_alias=env("OTEL_METRICS_EXPORTER", "metrics_exporter"),
        description="Comma-separated: `prometheus` (the metrics endpoint), `otlp` (each worker pushes its own "
        "values), both, or `none`.",
    )
    otlp_metrics_endpoint: OtlpUrl = otlp_field("metrics", "endpoint")
    otlp_metrics_protocol: OtlpProtocol = otlp_field("metrics", "protocol")
    otlp_metrics_headers: KeyValueText = otlp_field("metrics", "headers")
    otlp_metrics_timeout_ms: int = otlp_field("metrics", "timeout")
    otlp_metrics_compression: OtlpCompression = otlp_field("metrics", "compression")
    otlp_metrics_temporality: TemporalityPreference = Field(
        "cumulative",
        validation_alias=env("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "otlp_metrics_temporality"),
        description="`cumulative`, `delta` (counters and histograms as deltas, gauges as values) or `lowmemory` "
        "(the same for opskit, whose counters are all synchronous).",
    )
    metric_export_interval_ms: int = Field(
        60000,
        ge=1,
        le=86_400_000,
        validation_alias=env("OTEL_METRIC_EXPORT_INTERVAL", "metric_export_interval_ms"),
        description="Milliseconds between two OTLP metric exports of a worker.",
    )
    logs_exporter: LogsExporter = Field(
        "none",
        validation_alias=env("OTEL_LOGS_EXPORTER", "logs_exporter"),
        description="`otlp` sends every log line (app, libraries, access log) as an OTLP log record too; `none`.",
    )
    log_stdout: bool = Field(
        True, description="Write log lines to stdout; `false` with `OTEL_LOGS_EXPORTER=otlp` sends them over OTLP only."
    )
    otlp_logs_endpoint: OtlpUrl = otlp_field("logs", "endpoint")
    otlp_logs_protocol: OtlpProtocol = otlp_field("logs", "protocol")
    otlp_logs_headers: KeyValueText = otlp_field("logs", "headers")
    otlp_logs_timeout_ms: int = otlp_field("logs", "timeout")
    otlp_logs_compression: OtlpCompression = otlp_field("logs", "compression")
    blrp_schedule_delay_ms: int = Field(
        1000,
        ge=1,
        le=600_000,
        validation_alias=env("OTEL_BLRP_SCHEDULE_DELAY", "blrp_schedule_delay_ms"),
        description="Milliseconds between two exports of queued log records.",
    )
    blrp_max_queue_size: int = Field(
        2048,
        ge=1,
        le=1_000_000,
        validation_alias=env("OTEL_BLRP_MAX_QUEUE_SIZE", "blrp_max_queue_size"),
        description="Log records queued per worker before new ones are dropped (collector down).",
    )
    blrp_max_export_batch_size: int = Field(
        512,
        ge=1,
        le=1_000_000,
        validation_alias=env("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "blrp_max_export_batch_size"),
        description="Most log records sent in one export request.",
    )

    @field_validator("metrics_exporter", mode="before")
    @classmethod
    def _otlp_exporter_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(name.strip().lower() for name in value.split(",") if name.strip())
        return value

    @field_validator("metrics_exporter")
    @classmethod
    def _otlp_exporters(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            return ("prometheus",)
        for name in value:
            if name not in METRICS_EXPORTERS:
                raise ValueError(f"{name[:64]!r} is not a metrics exporter; expected prometheus, otlp, both or none")
        if "none" in value and len(value) > 1:
            raise ValueError("`none` cannot be combined with another exporter")
        return tuple(dict.fromkeys(value))

    @field_validator("otlp_metrics_temporality", mode="before")
    @classmethod
    def _otlp_lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value  # case-insensitive, as the spec says

    @field_validator("logs_exporter", mode="before")
    @classmethod
    def _otlp_logs_exporter(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            return value or "none"
        return value

    @property
    def metrics_prometheus(self) -> bool:
        """Whether the Prometheus endpoint serves the metrics (``OTEL_METRICS_EXPORTER`` names it)."""
        return "prometheus" in self.metrics_exporter

    @property
    def metrics_otlp(self) -> bool:
        """Whether each worker pushes its metrics over OTLP."""
        return "otlp" in self.metrics_exporter
