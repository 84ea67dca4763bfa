"""Settings of what signals carry beyond their fixed shape: metric labels from the app, captured
headers, and access-log sampling."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from ._base import SettingsSection, env, split_list

StrTuple = Annotated[tuple[str, ...], NoDecode]

_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,63}")
_HEADER = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}")
#: Labels opskit's request metrics have already, in either naming (and Prometheus' own).
_TAKEN = frozenset(
    {"method", "route", "status", "le", "exception_type", "instance", "job"}
    | {"http_request_method", "http_route", "http_response_status_code", "url_scheme", "error_type"}
)
HEADER_PREFIX = "header:"


def label_name(source: str) -> str:
    """The label a ``OPSKIT_METRICS_LABELS`` entry writes: the annotation's name, or the header's in snake case."""
    if source.startswith(HEADER_PREFIX):
        return source[len(HEADER_PREFIX) :].lower().replace("-", "_")
    return source


class SignalSettings(SettingsSection):
    """Knobs of annotations as metric labels, header capture and access-log sampling."""

    metrics_labels: StrTuple = Field(
        (),
        description=(
            "Extra labels of the request metrics (`http_requests_total`, `http_request_duration_seconds`): names "
            "given to `opskit.annotate()` (`tenant,plan`) or request headers (`header:X-Client-Version`, label "
            "`x_client_version`). A request without the value gets an empty label."
        ),
    )
    metrics_label_limit: int = Field(
        100,
        ge=1,
        le=100_000,
        description=(
            "Distinct values each extra label keeps per process; later new values become `__other__` and are "
            "counted in `opskit_metrics_label_overflow_total`."
        ),
    )
    capture_headers_server_request: StrTuple = Field(
        (),
        validation_alias=env(
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "capture_headers_server_request"
        ),
        description=(
            "Request headers recorded on the server span as `http.request.header.<name>`: comma-separated names "
            "or regular expressions, matched whole and case-insensitively."
        ),
    )
    capture_headers_server_response: StrTuple = Field(
        (),
        validation_alias=env(
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", "capture_headers_server_response"
        ),
        description="Response headers recorded on the server span as `http.response.header.<name>` (same syntax).",
    )
    capture_headers_sanitize_fields: StrTuple = Field(
        (),
        validation_alias=env(
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS", "capture_headers_sanitize_fields"
        ),
        description=(
            "Captured headers whose values are written as `[REDACTED]` (names or regular expressions); "
            "`OPSKIT_LOG_REDACT_KEYS` are redacted too."
        ),
    )
    access_log_captured_headers: bool = Field(
        False,
        description="Also write the captured headers on the access line (`request_headers`, `response_headers`).",
    )
    access_log_sample: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description=(
            "Share of ordinary requests with an access line (errors and slow requests are always logged). Decided "
            "from the trace ID when there is one, as the trace ID ratio sampler does, so at equal rates the logged "
            "requests are the traced ones; skipped lines are counted in `opskit_access_log_skipped_total`."
        ),
    )
    access_log_sample_keep_4xx: bool = Field(
        False, description="With sampling, also always log 4xx responses (5xx always are)."
    )
    access_log_slow_threshold: float | None = Field(
        None,
        gt=0,
        description="Seconds past which a request's access line is written at `warning` and never sampled out.",
    )

    @field_validator(
        "metrics_labels",
        "capture_headers_server_request",
        "capture_headers_server_response",
        "capture_headers_sanitize_fields",
        mode="before",
    )
    @classmethod
    def _split_signal_lists(cls, value: object) -> object:
        return split_list(value)

    @field_validator("metrics_labels")
    @classmethod
    def _metrics_labels_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        seen: set[str] = set()
        for source in value:
            if source.startswith(HEADER_PREFIX):
                if not _HEADER.fullmatch(source[len(HEADER_PREFIX) :]):
                    raise ValueError(f"{source!r} does not name a header: expected header:X-Name")
            elif not _LABEL.fullmatch(source) or source.startswith("__"):
                raise ValueError(f"{source!r} is not a label name: expected letters, digits and '_' (or header:X-Name)")
            name = label_name(source)
            if name in _TAKEN or name in seen:
                raise ValueError(f"{source!r} gives the label {name!r}, which is taken")
            seen.add(name)
        return value

    @field_validator(
        "capture_headers_server_request", "capture_headers_server_response", "capture_headers_sanitize_fields"
    )
    @classmethod
    def _capture_headers_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return value
