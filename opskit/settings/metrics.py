"""Settings of the metrics feature."""

from __future__ import annotations

import math
import os
import tempfile
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from ._base import SettingsSection, check_host, check_path_patterns, env, split_list

StrTuple = Annotated[tuple[str, ...], NoDecode]
FloatTuple = Annotated[tuple[float, ...], NoDecode]
#: Names of the request metrics: opskit's Prometheus ones, or OpenTelemetry's HTTP semantic conventions.
MetricsNaming = Literal["prometheus", "otel"]

DEFAULT_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DEFAULT_SIZE_BUCKETS = (100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0, 10_000_000.0)


def check_writable_directory(path: str) -> None:
    """``path`` is a directory this process can write in, or can be created as one.

    Checked by writing (and at once removing) a file, not with ``os.access``: root passes every
    permission check but still cannot write to a read-only mount or create a directory in ``/proc``.
    """
    target = os.path.abspath(path)
    existing = target
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        what = "is not a directory" if existing == target else f"cannot be created: {existing} is not a directory"
        raise ValueError(f"{path!r} {what}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        where = "is not writable" if existing == target else f"cannot be created in {existing}"
        raise ValueError(f"{path!r} {where}: {exc.strerror or exc}") from None


class MetricsSettings(SettingsSection):
    """Knobs of the metrics feature."""

    prometheus_multiproc_dir: str | None = Field(
        None,
        validation_alias=env("PROMETHEUS_MULTIPROC_DIR", "OPSKIT_PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"),
        description="Directory where the workers of one server meet to add up their metrics (empty: in memory).",
    )
    metrics_path: str = Field("/metrics", description="Path of the metrics endpoint.")
    metrics_naming: MetricsNaming = Field(
        "prometheus",
        description=(
            "Names of the HTTP metrics: `prometheus` (`http_requests_total`, `http_request_duration_seconds`, labels "
            "`method`, `route`, `status`) or `otel`, OpenTelemetry's HTTP semantic conventions "
            "(`http.server.request.duration`, `http_server_request_duration_seconds` in `/metrics`)."
        ),
    )
    metrics_on_app_port: bool = Field(
        True, description="Serve the metrics endpoint on the app's own port (can be off with `OPSKIT_METRICS_PORT`)."
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="A separate port serving only the metrics endpoint (empty: none)."
    )
    metrics_host: str = Field("0.0.0.0", description="Address the separate metrics port listens on.")
    metrics_duration_buckets: FloatTuple = Field(
        DEFAULT_DURATION_BUCKETS, description="Upper bounds (seconds) of the request duration histogram buckets."
    )
    metrics_size_enabled: bool = Field(True, description="Histograms of request and response body sizes.")
    metrics_size_buckets: FloatTuple = Field(
        DEFAULT_SIZE_BUCKETS, description="Upper bounds (bytes) of the request and response size histogram buckets."
    )
    metrics_group_status: bool = Field(
        False, description="Label `status` as `2xx`, `4xx`... instead of the exact code (fewer series)."
    )
    metrics_exemplars: bool = Field(True, description="Attach the trace ID of sampled requests as exemplars.")
    metrics_exclude_paths: StrTuple = Field(
        ("/healthz", "/readyz", "/metrics"),
        description="Paths not measured (exact, or a prefix ending in `*`).",
    )
    metrics_in_progress_interval: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Seconds between updates of other workers' `http_requests_in_progress` (the scraped one is exact).",
    )

    @field_validator("metrics_exclude_paths", "metrics_duration_buckets", "metrics_size_buckets", mode="before")
    @classmethod
    def _metrics_split(cls, value: object) -> object:
        return split_list(value)

    @field_validator("metrics_exclude_paths")
    @classmethod
    def _metrics_exclude_paths_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_path_patterns(value)

    @field_validator("metrics_duration_buckets", "metrics_size_buckets")
    @classmethod
    def _metrics_buckets(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(math.isnan(b) or math.isinf(b) or b <= 0 for b in value):
            raise ValueError("expected positive finite numbers, e.g. 0.01,0.1,1")
        if len(set(value)) != len(value) or list(value) != sorted(value):
            raise ValueError("expected distinct numbers in increasing order, e.g. 0.01,0.1,1")
        return value

    @field_validator("metrics_path")
    @classmethod
    def _metrics_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("expected a path starting with '/'")
        return value

    @field_validator("prometheus_multiproc_dir", "metrics_port", mode="before")
    @classmethod
    def _metrics_empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("prometheus_multiproc_dir")
    @classmethod
    def _metrics_directory(cls, value: str | None) -> str | None:
        if value is not None:
            check_writable_directory(value)
        return value

    @field_validator("metrics_host")
    @classmethod
    def _metrics_host(cls, value: str) -> str:
        return check_host(value)
