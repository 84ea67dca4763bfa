"""Settings of OTLP export for metrics and logs: the standard ``OTEL_*`` variables.

Every signal-specific variable falls back to the generic one, as the OpenTelemetry specification
defines (``OTEL_EXPORTER_OTLP_METRICS_HEADERS``, else ``OTEL_EXPORTER_OTLP_HEADERS``); the
signal endpoint is used as given, the generic one gets ``/v1/metrics`` or ``/v1/logs`` appended.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from ._base import SettingsSection, check_port, env, split_host_port
from .tracing import OtlpCompression, OtlpProtocol, parse_key_values

TemporalityPreference = Literal["cumulative", "delta", "lowmemory"]
LogsExporter = Literal["otlp", "none"]
StrTuple = Annotated[tuple[str, ...], NoDecode]
METRICS_EXPORTERS = ("prometheus", "otlp", "none")


def check_otlp_url(value: str) -> str:
    """An empty string, or an http(s) URL with a host (and a valid port): what an OTLP endpoint is."""
    value = value.strip()
    if value:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL with a host, e.g. http://otel-collector:4318")
        port = split_host_port(parts.netloc.rpartition("@")[2])[1]
        if port:
            check_port(port)
        if parts.fragment:
            raise ValueError("an OTLP endpoint has no #fragment")
    return value


class OtlpSettings(SettingsSection):
    """OTLP/HTTP export of metrics and log records, beside (or instead of) Prometheus and stdout."""

    metrics_exporter: StrTuple = Field(
        ("prometheus",),
        validation_alias=env("OTEL_METRICS_EXPORTER", "metrics_exporter"),
        description="Comma-separated: `prometheus` (the metrics endpoint), `otlp` (each worker pushes its own "
        "values), both, or `none`.",
    )
    otlp_metrics_endpoint: str = Field(
        "",
        validation_alias=env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "otlp_metrics_endpoint"),
        description="Full URL metrics are sent to; wins over `OTEL_EXPORTER_OTLP_ENDPOINT` (+ `/v1/metrics`).",
    )
    otlp_metrics_protocol: OtlpProtocol = Field(
        "http/protobuf",
        validation_alias=env(
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL", "otlp_metrics_protocol"
        ),
        description="`http/protobuf` (metrics and logs are sent over OTLP/HTTP only).",
    )
    otlp_metrics_headers: str = Field(
        "",
        validation_alias=env(
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS", "otlp_metrics_headers"
        ),
        description="Headers of metric exports, `key=value,...`; falls back to `OTEL_EXPORTER_OTLP_HEADERS`.",
    )
    otlp_metrics_timeout_ms: int = Field(
        10000,
        ge=1,
        le=600_000,
        validation_alias=env(
            "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT", "otlp_metrics_timeout_ms"
        ),
        description="Milliseconds one metric export may take, retries included.",
    )
    otlp_metrics_compression: OtlpCompression = Field(
        "none",
        validation_alias=env(
            "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION", "otlp_metrics_compression"
        ),
        description="`none` or `gzip`, for metric exports.",
    )
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
    otlp_logs_endpoint: str = Field(
        "",
        validation_alias=env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "otlp_logs_endpoint"),
        description="Full URL log records are sent to; wins over `OTEL_EXPORTER_OTLP_ENDPOINT` (+ `/v1/logs`).",
    )
    otlp_logs_protocol: OtlpProtocol = Field(
        "http/protobuf",
        validation_alias=env("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL", "otlp_logs_protocol"),
        description="`http/protobuf` (log records are sent over OTLP/HTTP only).",
    )
    otlp_logs_headers: str = Field(
        "",
        validation_alias=env("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS", "otlp_logs_headers"),
        description="Headers of log exports, `key=value,...`; falls back to `OTEL_EXPORTER_OTLP_HEADERS`.",
    )
    otlp_logs_timeout_ms: int = Field(
        10000,
        ge=1,
        le=600_000,
        validation_alias=env("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT", "otlp_logs_timeout_ms"),
        description="Milliseconds one log export may take, retries included.",
    )
    otlp_logs_compression: OtlpCompression = Field(
        "none",
        validation_alias=env(
            "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION", "otlp_logs_compression"
        ),
        description="`none` or `gzip`, for log exports.",
    )
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

    @field_validator("otlp_metrics_endpoint", "otlp_logs_endpoint")
    @classmethod
    def _otlp_url(cls, value: str) -> str:
        return check_otlp_url(value)

    @field_validator("otlp_metrics_headers", "otlp_logs_headers")
    @classmethod
    def _otlp_key_values(cls, value: str) -> str:
        parse_key_values(value)
        return value

    @property
    def metrics_prometheus(self) -> bool:
        """Whether the Prometheus endpoint serves the metrics (``OTEL_METRICS_EXPORTER`` names it)."""
        return "prometheus" in self.metrics_exporter

    @property
    def metrics_otlp(self) -> bool:
        """Whether each worker pushes its metrics over OTLP."""
        return "otlp" in self.metrics_exporter
