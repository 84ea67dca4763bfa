"""Settings of the foundation: service identity, request IDs, logging, proxies, health."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from ._base import SettingsSection, check_cidrs, env, split_list

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["json", "console"]
RequestIdFormat = Literal["uuid4", "uuid7"]
StrTuple = Annotated[tuple[str, ...], NoDecode]

DEFAULT_REDACT_KEYS = (
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "password",
    "passwd",
    "token",
    "access_token",
    "refresh_token",
    "secret",
    "client_secret",
    "api_key",
    "apikey",
    "x-api-key",
)


class CoreSettings(SettingsSection):
    """Service identity, feature switches, request IDs, logging, proxies and health."""

    service_name: str = Field(
        "unknown_service",
        validation_alias=env("OTEL_SERVICE_NAME", "OPSKIT_SERVICE_NAME", "service_name"),
        description="Service name on every log line, metric and span.",
    )
    service_version: str = Field("", description="Service version (logs, `opskit_build_info`, span resource).")
    environment: str = Field("", description="Deployment environment, e.g. `production` (logs, span resource).")

    request_id_enabled: bool = Field(True, description="Request IDs: accept, generate, echo.")
    logging_enabled: bool = Field(True, description="Configure structlog JSON logging and the access log.")
    metrics_enabled: bool = Field(True, description="Prometheus metrics.")
    tracing_enabled: bool = Field(True, description="OpenTelemetry tracing (exports only when an exporter is set).")
    ratelimit_enabled: bool = Field(True, description="Rate limiting (limits apply only when configured).")
    health_enabled: bool = Field(True, description="Serve the liveness and readiness endpoints.")

    request_id_header: str = Field("X-Request-ID", description="Header carrying the request ID in and out.")
    request_id_format: RequestIdFormat = Field("uuid4", description="Format of generated IDs: `uuid4` or `uuid7`.")
    request_id_trust_incoming: bool = Field(True, description="Keep a valid incoming ID instead of always generating.")
    request_id_max_length: int = Field(128, ge=8, le=1024, description="Longest incoming ID accepted.")
    request_id_log_interval: float = Field(
        10.0,
        ge=0,
        description="Seconds between two log lines about refused incoming IDs of one reason (the rest are counted).",
    )

    log_level: LogLevel = Field(
        "info",
        validation_alias=env("OPSKIT_LOG_LEVEL", "LOG_LEVEL", "log_level"),
        description="Lowest level written: debug, info, warning, error, critical.",
    )
    log_format: LogFormat = Field("json", description="`json` (one object per line) or `console` (coloured, for dev).")
    log_redact_keys: StrTuple = Field(
        DEFAULT_REDACT_KEYS, description="Comma-separated keys whose values are replaced by `[REDACTED]` in logs."
    )
    log_coalesce: bool = Field(
        True,
        description=(
            "Write the info lines of one event-loop iteration with one `write(2)` at its end instead of one each; "
            "warnings and errors are written at once. A crash loses at most one iteration's info lines."
        ),
    )
    access_log_enabled: bool = Field(True, description="One JSON line per finished request.")
    access_log_exclude_paths: StrTuple = Field(
        ("/healthz", "/readyz", "/metrics"),
        description="Paths with no access-log line (exact, or a prefix ending in `*`).",
    )

    trusted_proxies: StrTuple = Field(
        (),
        description="CIDRs of proxies whose `X-Forwarded-For`/`Forwarded` headers are believed (default: none).",
    )
    unmatched_route: str = Field(
        "__unmatched__", description="Route label for requests that match no route (bounded cardinality)."
    )

    health_path: str = Field("/healthz", description="Liveness endpoint: 200 while the process answers.")
    readiness_path: str = Field("/readyz", description="Readiness endpoint: 503 when a check fails or on shutdown.")
    readiness_timeout: float = Field(2.0, gt=0, le=60, description="Seconds each readiness check may take.")
    gc_freeze: bool = Field(
        True,
        description=(
            "Once the app has started, move every object it holds out of the cyclic GC's reach (`gc.freeze()`): "
            "full collections then scan only what requests allocate, not the whole app (pauses of 40 ms become "
            "under 1 ms)."
        ),
    )

    @field_validator("log_redact_keys", "access_log_exclude_paths", "trusted_proxies", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return split_list(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_cidrs(value)

    @field_validator("request_id_header")
    @classmethod
    def _header(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "-_" for c in value):
            raise ValueError("expected a header name of letters, digits, '-' and '_'")
        return value

    @field_validator("health_path", "readiness_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("expected a path starting with '/'")
        return value
