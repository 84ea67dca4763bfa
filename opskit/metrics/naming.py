"""The two namings of the request metrics: opskit's Prometheus names, or OpenTelemetry's HTTP semantic conventions.

``OPSKIT_METRICS_NAMING=prometheus`` (the default) keeps the names Prometheus users know
(``http_requests_total``, ``http_request_duration_seconds``, labels ``method``, ``route``, ``status``).
``otel`` gives the names and attributes of the stable HTTP server conventions
(``http.server.request.duration``, ``http.request.method``, ``http.route``,
``http.response.status_code``, ``url.scheme``, ``error.type``): OTLP carries them as they are, and
``/metrics`` shows what OpenTelemetry's Prometheus exporter makes of them
(``http_server_request_duration_seconds``, ``http_request_method``...). There is no request
counter in the conventions: the count is the duration histogram's ``_count``.

Everything is decided here, once, when the component defines its families; a request pays
nothing for the choice. Families without a convention (the exception counter, first byte,
websockets, every ``opskit_*`` metric) keep their names in both namings; with ``otel`` their
HTTP labels take the conventions' attribute names, so one query language fits all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal, TypeVar

from ..settings.metrics import MetricsNaming as Naming
from .registry import Counter, Gauge, Histogram, Kind, Registry

__all__ = [
    "FIELDS",
    "INT_ATTRIBUTES",
    "NAMINGS",
    "OPTIONAL_ATTRIBUTES",
    "Family",
    "Field",
    "Naming",
    "counter",
    "families",
    "gauge",
    "histogram",
    "label_for",
    "prometheus_name",
]

NAMINGS: Final[tuple[Naming, ...]] = ("prometheus", "otel")

#: What a label of the request metrics holds; the component fills them in this vocabulary.
Field = Literal["method", "route", "status", "scheme", "error", "exception", "direction"]
FIELDS: Final[tuple[Field, ...]] = ("method", "route", "status", "scheme", "error", "exception", "direction")

#: Attributes OTLP sends as integers (the conventions type them so).
INT_ATTRIBUTES: Final = frozenset({"http.response.status_code"})
#: Attributes left out of an OTLP data point when empty ("set only if the request ended with an error").
OPTIONAL_ATTRIBUTES: Final = frozenset({"error.type"})

# The conventions' attribute for each field; opskit's Prometheus label is the other column.
_ATTRIBUTES: Final[dict[Field, str]] = {
    "method": "http.request.method",
    "route": "http.route",
    "status": "http.response.status_code",
    "scheme": "url.scheme",
    "error": "error.type",
    "exception": "error.type",
    "direction": "direction",
}
_PROMETHEUS_LABELS: Final[dict[Field, str]] = {
    "method": "method",
    "route": "route",
    "status": "status",
    "scheme": "scheme",
    "error": "error",
    "exception": "exception_type",
    "direction": "direction",
}
# UCUM units and the suffix OpenTelemetry's Prometheus exporter appends for them; ``{...}`` units add none.
_UNIT_SUFFIXES: Final = {"s": "seconds", "By": "bytes", "1": "ratio"}


def label_for(attribute: str) -> str:
    """The Prometheus label of an OpenTelemetry attribute: every character outside ``[a-zA-Z0-9_]`` becomes ``_``."""
    return "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in attribute)


def prometheus_name(name: str, unit: str, kind: Kind) -> str:
    """The name OpenTelemetry's Prometheus exporter gives instrument ``name`` with ``unit``.

    Invalid characters become ``_``, the unit's word is appended (``s``: ``_seconds``, ``By``:
    ``_bytes``; an annotation such as ``{request}`` adds nothing), and a monotonic sum ends in ``_total``.
    """
    base = label_for(name)
    suffix = "" if unit.startswith("{") else _UNIT_SUFFIXES.get(unit, label_for(unit))
    if suffix and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    if kind == "counter" and not base.endswith("_total"):
        base += "_total"
    return base


@dataclass(frozen=True)
class Family:
    """One metric family as one naming declares it: its names in ``/metrics`` and in OTLP, and its labels.

    ``fields`` says what each label holds; ``extra`` whether the ``OPSKIT_METRICS_LABELS`` follow them.
    """

    kind: Kind
    name: str
    documentation: str
    fields: tuple[Field, ...]
    labels: tuple[str, ...]
    otlp_name: str
    unit: str
    attributes: tuple[str, ...]
    extra: bool = False


def _opskit(kind: Kind, name: str, documentation: str, fields: tuple[Field, ...], naming: Naming) -> Family:
    """A family without a convention: its own name everywhere; with ``otel``, its labels are the attributes'."""
    unit = next((unit for unit, word in _UNIT_SUFFIXES.items() if name.removesuffix("_total").endswith(word)), "")
    attributes = tuple(_ATTRIBUTES[f] for f in fields)
    if naming == "prometheus":
        labels = tuple(_PROMETHEUS_LABELS[f] for f in fields)
        attributes = labels  # as before: OTLP carries the Prometheus labels
    else:
        labels = tuple(label_for(a) for a in attributes)
    return Family(kind, name, documentation, fields, labels, name, unit, attributes)


def _convention(
    kind: Kind, name: str, unit: str, documentation: str, fields: tuple[Field, ...], *, extra: bool = False
) -> Family:
    attributes = tuple(_ATTRIBUTES[f] for f in fields)
    labels = tuple(label_for(a) for a in attributes)
    return Family(kind, prometheus_name(name, unit, kind), documentation, fields, labels, name, unit, attributes, extra)


def _prometheus(kind: Kind, name: str, documentation: str, fields: tuple[Field, ...], *, extra: bool = False) -> Family:
    return replace(_opskit(kind, name, documentation, fields, "prometheus"), extra=extra)


_DURATION_DOC: Final = "Seconds from the request to the end of its response body (background tasks excluded)."
_FIRST_BYTE_DOC: Final = (
    "Seconds from the request to the first part of a streamed response body (bodies sent in several parts)."
)
_SERVER: Final[tuple[Field, ...]] = ("method", "route", "status", "scheme", "error")


def _shared(naming: Naming) -> dict[str, Family]:
    """The families without a convention, in either naming."""
    return {
        "exceptions": _opskit(
            "counter",
            "http_exceptions_total",
            "Unhandled exceptions raised by the app.",
            ("method", "route", "exception"),
            naming,
        ),
        "first_byte": _opskit(
            "histogram", "http_response_first_byte_seconds", _FIRST_BYTE_DOC, ("method", "route"), naming
        ),
        "ws_opened": _opskit(
            "counter",
            "websocket_connections_opened_total",
            "Websocket connections the app accepted, by route template.",
            ("route",),
            naming,
        ),
        "ws_open": _opskit(
            "gauge", "websocket_connections_open", "Websocket connections open now.", ("route",), naming
        ),
        "ws_duration": _opskit(
            "histogram",
            "websocket_connection_duration_seconds",
            "Seconds an accepted websocket connection lasted.",
            ("route",),
            naming,
        ),
        "ws_messages": _opskit(
            "counter",
            "websocket_messages_total",
            "Websocket messages by route template and direction.",
            ("route", "direction"),
            naming,
        ),
    }


_TABLE: Final[dict[Naming, dict[str, Family]]] = {
    "prometheus": {
        "requests": _prometheus(
            "counter",
            "http_requests_total",
            "HTTP requests by method, route template and status.",
            ("method", "route", "status"),
            extra=True,
        ),
        "duration": _prometheus(
            "histogram", "http_request_duration_seconds", _DURATION_DOC, ("method", "route"), extra=True
        ),
        "active": _prometheus("gauge", "http_requests_in_progress", "HTTP requests being served.", ("method", "route")),
        "request_size": _prometheus(
            "histogram", "http_request_size_bytes", "Request body sizes (Content-Length).", ("method", "route")
        ),
        "response_size": _prometheus(
            "histogram", "http_response_size_bytes", "Response body sizes.", ("method", "route")
        ),
        **_shared("prometheus"),
    },
    "otel": {
        "duration": _convention(
            "histogram", "http.server.request.duration", "s", "Duration of HTTP server requests.", _SERVER, extra=True
        ),
        "active": _convention(
            "gauge",
            "http.server.active_requests",
            "{request}",
            "Number of active HTTP server requests.",
            ("method", "scheme"),
        ),
        "request_size": _convention(
            "histogram",
            "http.server.request.body.size",
            "By",
            "Size of HTTP server request bodies (Content-Length).",
            _SERVER,
        ),
        "response_size": _convention(
            "histogram", "http.server.response.body.size", "By", "Size of HTTP server response bodies.", _SERVER
        ),
        **_shared("otel"),
    },
}


def families(naming: Naming) -> dict[str, Family]:
    """The request metrics' families under ``naming``, by role (``otel`` has no ``requests`` counter)."""
    return _TABLE[naming]


def counter(registry: Registry, family: Family, extra: Sequence[str] = ()) -> Counter:
    """Define (or get) the counter ``family`` in ``registry``; ``extra`` labels follow its own when it takes them."""
    if family.kind != "counter":
        raise ValueError(f"{family.name} is a {family.kind}")
    return _described(registry.counter(family.name, family.documentation, _labels(family, extra)), family, extra)


def gauge(registry: Registry, family: Family) -> Gauge:
    """Define (or get) the gauge ``family`` (summed across workers) in ``registry``."""
    if family.kind != "gauge":
        raise ValueError(f"{family.name} is a {family.kind}")
    return _described(registry.gauge(family.name, family.documentation, family.labels, mode="sum"), family, ())


def histogram(registry: Registry, family: Family, buckets: Sequence[float], extra: Sequence[str] = ()) -> Histogram:
    """Define (or get) the histogram ``family`` with upper bounds ``buckets`` in ``registry``."""
    if family.kind != "histogram":
        raise ValueError(f"{family.name} is a {family.kind}")
    metric = registry.histogram(family.name, family.documentation, _labels(family, extra), buckets=buckets)
    return _described(metric, family, extra)


def _labels(family: Family, extra: Sequence[str]) -> tuple[str, ...]:
    return (*family.labels, *extra) if family.extra else family.labels


M = TypeVar("M", Counter, Gauge, Histogram)


def _described(metric: M, family: Family, extra: Sequence[str]) -> M:
    # The OTLP export names it as the family says; extra labels keep their names as attribute keys.
    metric.describe_otlp(family.otlp_name, family.unit, (*family.attributes, *(extra if family.extra else ())))
    return metric
