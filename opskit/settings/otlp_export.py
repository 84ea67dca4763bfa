"""Where and how each signal is exported over OTLP: one field set per signal, declared here once.

Every signal (traces, metrics, logs) has the same five knobs, read from the standard variables:
``OTEL_EXPORTER_OTLP_<SIGNAL>_{ENDPOINT,PROTOCOL,HEADERS,TIMEOUT,COMPRESSION}``, each but the
endpoint falling back to the generic ``OTEL_EXPORTER_OTLP_*`` as the OpenTelemetry specification
defines. A signal's endpoint is used as given; the generic ``OTEL_EXPORTER_OTLP_ENDPOINT`` gets
``/v1/<signal>`` appended over HTTP. :func:`otlp_field` builds the field of one knob of one signal;
the sections declare ``otlp_<signal>_<knob>`` with it, and :func:`otlp_export` reads them back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator, Field

from ._base import check_port, env, split_host_port

__all__ = [
    "KeyValueText",
    "OtlpCompression",
    "OtlpExport",
    "OtlpProtocol",
    "OtlpUrl",
    "Signal",
    "check_otlp_url",
    "otlp_export",
    "otlp_field",
    "parse_key_values",
]

OtlpProtocol = Literal["http/protobuf", "grpc"]
OtlpCompression = Literal["none", "gzip"]
Signal = Literal["traces", "metrics", "logs"]
Knob = Literal["endpoint", "protocol", "headers", "timeout", "compression"]

_KEY = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~/:@]{1,255}")


def parse_key_values(text: str) -> dict[str, str]:
    """Parse the W3C-baggage-like ``key=value,key2=value2`` lists of OTEL_RESOURCE_ATTRIBUTES and headers.

    Values are percent-decoded. Raises :class:`ValueError` on a malformed member.
    """
    pairs: dict[str, str] = {}
    for member in text.split(","):
        if not member.strip():
            continue
        key, sep, value = member.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise ValueError(f"expected comma-separated key=value pairs, got {member.strip()!r}")
        value = unquote(value.strip())
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"the value of {key!r} contains a control character")
        pairs[key] = value
    return pairs


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


def _check_key_values(value: str) -> str:
    parse_key_values(value)
    return value


OtlpUrl = Annotated[str, AfterValidator(check_otlp_url)]
KeyValueText = Annotated[str, AfterValidator(_check_key_values)]

# What each signal's exports are called in the descriptions: (what is sent, one export of it).
_NOUNS: dict[Signal, tuple[str, str]] = {
    "traces": ("Spans", "span"),
    "metrics": ("Metrics", "metric"),
    "logs": ("Log records", "log"),
}
_FIELD_SUFFIX: dict[Knob, str] = {"timeout": "timeout_ms"}


def otlp_field(signal: Signal, knob: Knob) -> Any:
    """The pydantic field of ``otlp_<signal>_<knob>`` (``timeout_ms`` for the timeout): default, variables,
    bounds and description, the same for every signal."""
    name = f"otlp_{signal}_{_FIELD_SUFFIX.get(knob, knob)}"
    own = f"OTEL_EXPORTER_OTLP_{signal.upper()}_{knob.upper()}"
    generic = f"OTEL_EXPORTER_OTLP_{knob.upper()}"
    sent, one = _NOUNS[signal]
    if knob == "endpoint":
        return Field(
            "",
            validation_alias=env(own, name),
            description=f"Full URL {sent.lower()} are sent to; wins over `OTEL_EXPORTER_OTLP_ENDPOINT` "
            f"(+ `/v1/{signal}` over HTTP).",
        )
    if knob == "protocol":
        return Field(
            "http/protobuf",
            validation_alias=env(own, generic, name),
            description=f"How {sent.lower()} are sent: `http/protobuf`, or `grpc` "
            "(needs `pip install 'opskit-asgi[grpc]'`).",
        )
    if knob == "headers":
        return Field(
            "",
            validation_alias=env(own, generic, name),
            description=f"Headers (gRPC metadata) of {one} exports, `key=value,...` (percent-encoded values).",
        )
    if knob == "timeout":
        return Field(
            10000,
            ge=1,
            le=600_000,
            validation_alias=env(own, generic, name),
            description=f"Milliseconds one {one} export may take, retries included.",
        )
    return Field(
        "none",
        validation_alias=env(own, generic, name),
        description=f"`none` or `gzip`, for {one} exports.",
    )


@dataclass(frozen=True, slots=True)
class OtlpExport:
    """One signal's export settings, read back: its own endpoint (may be empty), protocol, parsed headers,
    timeout in seconds, compression."""

    signal: Signal
    endpoint: str
    protocol: OtlpProtocol
    headers: dict[str, str]
    timeout: float
    compression: OtlpCompression


def otlp_export(settings: Any, signal: Signal) -> OtlpExport:
    """The ``otlp_<signal>_*`` settings of ``signal`` (an :class:`opskit.settings.Settings`)."""
    prefix = f"otlp_{signal}_"
    return OtlpExport(
        signal=signal,
        endpoint=getattr(settings, prefix + "endpoint"),
        protocol=getattr(settings, prefix + "protocol"),
        headers=parse_key_values(getattr(settings, prefix + "headers")),
        timeout=getattr(settings, prefix + "timeout_ms") / 1000,
        compression=getattr(settings, prefix + "compression"),
    )
