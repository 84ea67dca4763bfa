"""Settings of the tracing feature: the standard ``OTEL_*`` variables and opskit's own knobs."""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from ._base import SettingsSection, env, split_list
from .otlp_export import KeyValueText, OtlpCompression, OtlpProtocol, OtlpUrl, otlp_field, parse_key_values

__all__ = [
    "DEFAULT_PROPAGATORS",
    "PROPAGATOR_GROUP",
    "W3C_PROPAGATORS",
    "OtlpCompression",
    "OtlpProtocol",
    "TraceResponseHeader",
    "TracesExporter",
    "TracesSampler",
    "TracingSettings",
    "parse_key_values",
]

TracesExporter = Literal["otlp", "console", "none"]
TracesSampler = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]
TraceResponseHeader = Literal["none", "traceresponse", "server-timing"]
StrTuple = Annotated[tuple[str, ...], NoDecode]

_PROPAGATOR_NAME = re.compile(r"[a-z0-9_.\-]{1,64}")
DEFAULT_PROPAGATORS = ("tracecontext", "baggage")
# Parsed by opskit itself; any other name is an installed OpenTelemetry propagator (entry point).
W3C_PROPAGATORS = frozenset(DEFAULT_PROPAGATORS)
PROPAGATOR_GROUP = "opentelemetry_propagator"


class TracingSettings(SettingsSection):
    """OpenTelemetry tracing: exporter, sampler, resource, excluded paths, response header, outbound calls."""

    otel_sdk_disabled: bool = Field(
        False,
        validation_alias=env("OTEL_SDK_DISABLED", "otel_sdk_disabled"),
        description="`true` switches tracing off entirely (standard OpenTelemetry switch).",
    )
    traces_exporter: TracesExporter | None = Field(
        None,
        validation_alias=env("OTEL_TRACES_EXPORTER", "traces_exporter"),
        description="`otlp`, `console` or `none`. Unset: `otlp` when an OTLP endpoint is set, else `none` (no spans).",
    )
    otlp_endpoint: OtlpUrl = Field(
        "",
        validation_alias=env("OTEL_EXPORTER_OTLP_ENDPOINT", "otlp_endpoint"),
        description="Base URL of the OTLP collector for every signal, e.g. `http://otel-collector:4318` (over HTTP "
        "`/v1/traces`, `/v1/metrics` or `/v1/logs` is appended; over gRPC it is used as given).",
    )
    otlp_traces_endpoint: OtlpUrl = otlp_field("traces", "endpoint")
    otlp_traces_protocol: OtlpProtocol = otlp_field("traces", "protocol")
    otlp_traces_headers: KeyValueText = otlp_field("traces", "headers")
    otlp_traces_timeout_ms: int = otlp_field("traces", "timeout")
    otlp_traces_compression: OtlpCompression = otlp_field("traces", "compression")
    traces_sampler: TracesSampler = Field(
        "parentbased_always_on",
        validation_alias=env("OTEL_TRACES_SAMPLER", "traces_sampler"),
        description="always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, "
        "parentbased_traceidratio.",
    )
    traces_sampler_arg: float = Field(
        1.0,
        validation_alias=env("OTEL_TRACES_SAMPLER_ARG", "traces_sampler_arg"),
        description="Sampling ratio 0..1 for the `traceidratio` samplers.",
    )
    resource_attributes: str = Field(
        "",
        validation_alias=env("OTEL_RESOURCE_ATTRIBUTES", "resource_attributes"),
        description="Extra resource attributes, `key=value,key2=value2`; `OTEL_SERVICE_NAME`, "
        "`OPSKIT_SERVICE_VERSION`, `OPSKIT_ENVIRONMENT` and `K8S_*` win over the same keys.",
    )
    k8s_pod_name: str = Field(
        "",
        validation_alias=env("K8S_POD_NAME", "OPSKIT_K8S_POD_NAME", "k8s_pod_name"),
        description="Resource attribute `k8s.pod.name` (the Helm chart sets it from the downward API).",
    )
    k8s_namespace_name: str = Field(
        "",
        validation_alias=env("K8S_NAMESPACE_NAME", "K8S_NAMESPACE", "OPSKIT_K8S_NAMESPACE_NAME", "k8s_namespace_name"),
        description="Resource attribute `k8s.namespace.name` (downward API).",
    )
    k8s_node_name: str = Field(
        "",
        validation_alias=env("K8S_NODE_NAME", "OPSKIT_K8S_NODE_NAME", "k8s_node_name"),
        description="Resource attribute `k8s.node.name` (downward API).",
    )
    tracing_excluded_urls: StrTuple = Field(
        (),
        validation_alias=env("OTEL_PYTHON_EXCLUDED_URLS", "OPSKIT_TRACING_EXCLUDED_URLS", "tracing_excluded_urls"),
        description="Comma-separated regular expressions; a request whose path matches one gets no span. "
        "The health, readiness and metrics paths never get one.",
    )
    propagators: StrTuple = Field(
        DEFAULT_PROPAGATORS,
        validation_alias=env("OTEL_PROPAGATORS", "propagators"),
        description="Trace context formats read from requests and written to outgoing calls, in order (a later "
        "one wins): `tracecontext`, `baggage`, `b3` (one `b3` header), `b3multi` (`X-B3-*` headers), any other "
        "installed OpenTelemetry propagator, or `none`. `b3`/`b3multi` need `pip install 'opskit-asgi[b3]'`.",
    )
    tracing_response_header: TraceResponseHeader = Field(
        "none",
        description="Quote the trace to the client: `traceresponse` (W3C draft header), `server-timing` "
        '(`Server-Timing: traceparent;desc="..."`) or `none`.',
    )
    tracing_outbound: bool = Field(
        False,
        description="Trace outgoing httpx and redis calls (when opentelemetry-instrumentation-httpx / -redis "
        "are installed).",
    )
    bsp_schedule_delay_ms: int = Field(
        5000,
        ge=1,
        le=600_000,
        validation_alias=env("OTEL_BSP_SCHEDULE_DELAY", "bsp_schedule_delay_ms"),
        description="Milliseconds between two exports of the batch span processor.",
    )
    bsp_max_queue_size: int = Field(
        2048,
        ge=1,
        le=1_000_000,
        validation_alias=env("OTEL_BSP_MAX_QUEUE_SIZE", "bsp_max_queue_size"),
        description="Spans buffered per worker before new ones are dropped (collector down).",
    )
    bsp_max_export_batch_size: int = Field(
        512,
        ge=1,
        le=1_000_000,
        validation_alias=env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "bsp_max_export_batch_size"),
        description="Most spans sent in one export request.",
    )
    bsp_export_timeout_ms: int = Field(
        30000,
        ge=1,
        le=600_000,
        validation_alias=env("OTEL_BSP_EXPORT_TIMEOUT", "bsp_export_timeout_ms"),
        description="Milliseconds the batch span processor waits for one export.",
    )

    @field_validator("traces_exporter", mode="before")
    @classmethod
    def _tracing_empty_exporter(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("resource_attributes")
    @classmethod
    def _tracing_key_values(cls, value: str) -> str:
        parse_key_values(value)
        return value

    @field_validator("traces_sampler_arg")
    @classmethod
    def _tracing_ratio(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError("expected a sampling ratio between 0 and 1")
        return value

    @field_validator("tracing_excluded_urls", mode="before")
    @classmethod
    def _tracing_split(cls, value: object) -> object:
        return split_list(value)

    @field_validator("propagators", mode="before")
    @classmethod
    def _tracing_propagator_list(cls, value: object) -> object:
        # Read as the OpenTelemetry SDK reads the same variable when anything imports
        # opentelemetry.propagate (FastAPI does): split on commas, each name stripped, none dropped.
        if isinstance(value, str):
            return tuple(name.strip() for name in value.split(",")) if value.strip() else ()
        return value

    @field_validator("propagators")
    @classmethod
    def _tracing_propagators(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            return DEFAULT_PROPAGATORS
        for name in value:  # in order, as the SDK reads them: a `none` ends the list, a bad name before it fails
            if name.lower() == "none":
                return ("none",)
            if not name:
                raise ValueError("an empty name in the list; expected comma-separated names like tracecontext,baggage")
            if name in W3C_PROPAGATORS:
                continue
            # Names are case-sensitive entry points, for opskit as for the SDK.
            if not _PROPAGATOR_NAME.fullmatch(name) or not entry_points(group=PROPAGATOR_GROUP, name=name):
                hint = " (pip install 'opskit-asgi[b3]')" if name in ("b3", "b3multi") else ""
                if name.lower() != name and entry_points(group=PROPAGATOR_GROUP, name=name.lower()):
                    hint = f" (names are case-sensitive: {name.lower()!r})"
                raise ValueError(
                    f"{name[:64]!r} is not an installed propagator{hint}; "
                    "expected tracecontext, baggage, b3, b3multi, none or another installed one"
                )
        return tuple(dict.fromkeys(value))

    @field_validator("tracing_excluded_urls")
    @classmethod
    def _tracing_regexes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return value

    @property
    def traces_exporter_resolved(self) -> TracesExporter:
        """The exporter in effect: the explicit choice, else ``otlp`` when an endpoint is set, else ``none``."""
        if self.otel_sdk_disabled:
            return "none"
        if self.traces_exporter is not None:
            return self.traces_exporter
        return "otlp" if self.otlp_endpoint or self.otlp_traces_endpoint else "none"
