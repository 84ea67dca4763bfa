"""The catalogue of benchmarked variants: what each one installs and how to tell it is really on.

This module imports nothing heavy: the harness reads it, and ``bench.apps`` (run inside each
server process) builds the app a variant names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Family = Literal["bare", "opskit", "peer", "reference"]
Evidence = Literal["request_id", "access_log", "metrics", "spans", "redis"]

OPSKIT_FEATURES = ("request_id", "logging", "metrics", "tracing", "ratelimit", "health", "runtime", "overload")


@dataclass(frozen=True)
class Variant:
    """One configuration of the benchmark app."""

    name: str
    family: Family
    description: str
    features: frozenset[str] = field(default_factory=frozenset)
    evidence: frozenset[Evidence] = field(default_factory=frozenset)

    @property
    def needs_redis(self) -> bool:
        return "redis" in self.evidence


def _v(name: str, family: Family, description: str, features: set[str], evidence: set[Evidence]) -> Variant:
    return Variant(name, family, description, frozenset(features), frozenset(evidence))


VARIANTS: tuple[Variant, ...] = (
    _v("bare", "bare", "FastAPI app, no middleware", set(), set()),
    _v("opskit-request-id", "opskit", "opskit, request ID only", {"request_id"}, {"request_id"}),
    _v("opskit-access-log", "opskit", "opskit, JSON access log only", {"logging"}, {"access_log"}),
    _v("opskit-metrics", "opskit", "opskit, Prometheus metrics only", {"metrics"}, {"metrics"}),
    _v("opskit-tracing", "opskit", "opskit, tracing only (100 % sampled)", {"tracing"}, {"spans"}),
    _v("opskit-ratelimit", "opskit", "opskit, Redis token bucket only", {"ratelimit"}, {"redis"}),
    _v(
        "opskit-runtime",
        "opskit",
        "opskit, runtime health only (loop lag, blocked-loop watchdog, thread pool, background tasks)",
        {"runtime"},
        set(),
    ),
    _v(
        "opskit-overload",
        "opskit",
        "opskit, overload protection only (a concurrency cap never reached, the saturation gauge)",
        {"overload"},
        set(),
    ),
    _v(
        "opskit-all",
        "opskit",
        "opskit, every feature on",
        set(OPSKIT_FEATURES),
        {"request_id", "access_log", "metrics", "spans", "redis"},
    ),
    _v(
        "floor-request-id",
        "reference",
        "the least a request-ID middleware does: set a context variable, add a constant response header",
        {"request_id_floor"},
        {"request_id"},
    ),
    _v("peer-correlation-id", "peer", "asgi-correlation-id", {"correlation_id"}, {"request_id"}),
    _v("peer-instrumentator", "peer", "prometheus-fastapi-instrumentator", {"instrumentator"}, {"metrics"}),
    _v("peer-structlog", "peer", "structlog JSON access-log middleware (recipe)", {"structlog"}, {"access_log"}),
    _v("peer-otel", "peer", "opentelemetry-instrumentation-fastapi", {"otel"}, {"spans"}),
    _v("peer-slowapi", "peer", "slowapi with Redis storage", {"slowapi"}, {"redis"}),
    _v(
        "peer-stack",
        "peer",
        "all five peers together",
        {"correlation_id", "instrumentator", "structlog", "otel", "slowapi"},
        {"request_id", "access_log", "metrics", "spans", "redis"},
    ),
)

BY_NAME = {variant.name: variant for variant in VARIANTS}

# Rate limit that never rejects in a benchmark; both limiters get the same one.
NEVER_REJECTING_LIMIT = "1000000000/second"


@dataclass(frozen=True)
class Target:
    """A row of the target table: an opskit variant, its goal and the peers it is compared with."""

    label: str
    variant: str
    min_ratio: float
    peers: tuple[str, ...]
    reference_peer_ratios: str


TARGETS: tuple[Target, ...] = (
    Target("request ID alone", "opskit-request-id", 0.97, ("peer-correlation-id",), "asgi-correlation-id 0.92"),
    Target(
        "metrics alone",
        "opskit-metrics",
        0.90,
        ("peer-instrumentator",),
        "instrumentator 0.79, starlette-exporter 0.61",
    ),
    Target("JSON access log alone", "opskit-access-log", 0.85, ("peer-structlog",), "structlog recipe 0.65"),
    Target("tracing alone, 100 % sampled", "opskit-tracing", 0.70, ("peer-otel",), "OTel FastAPI 0.26"),
    Target("Redis limiter alone", "opskit-ratelimit", 0.80, ("peer-slowapi",), "slowapi 0.14, fastapi-limiter 0.26"),
    Target("everything on", "opskit-all", 0.50, ("peer-stack",), "peer stack 0.10"),
)

# "everything on" also requires p99 latency within this factor of bare's.
ALL_ON_MAX_P99_FACTOR = 2.0
# gunicorn 2 workers vs 1, all on.
SCALING_TARGET = 1.8


def select(names: list[str] | None) -> list[Variant]:
    """The variants named (bare always first, since ratios need it), or all of them."""
    if not names:
        return list(VARIANTS)
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {', '.join(BY_NAME)}")
    chosen = ["bare", *(name for name in names if name != "bare")]
    return [BY_NAME[name] for name in dict.fromkeys(chosen)]
