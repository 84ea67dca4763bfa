"""The catalogue of benchmarked variants: what each one installs and how to tell it is really on.

This module imports nothing heavy: the harness reads it, and ``bench.apps`` (run inside each
server process) builds the app a variant names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Family = Literal["bare", "opskit", "peer", "reference"]
Evidence = Literal["request_id", "access_log", "metrics", "spans", "redis", "otlp", "redis_share", "shared_table"]

OPSKIT_FEATURES = ("request_id", "logging", "metrics", "tracing", "ratelimit", "health", "runtime", "overload")
#: Settings a variant's extra features turn on (they cost something when set, so "opskit-all" leaves them unset).
OPSKIT_EXTRAS: dict[str, dict[str, object]] = {
    "labels": {"metrics_labels": ("tenant", "plan")},
    "sampling": {"access_log_sample": 0.1},
    "metrics_otel": {"metrics_naming": "otel"},
}

# Exporters on top of a feature: OTLP metric pushes (metrics) and OTLP log records (logging).
OTLP_FEATURES = ("otlp_metrics", "otlp_logs")


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
    _v(
        "opskit-metrics-otel",
        "opskit",
        "opskit, metrics only, named by OpenTelemetry's HTTP semantic conventions (OPSKIT_METRICS_NAMING=otel)",
        {"metrics", "metrics_otel"},
        {"metrics"},
    ),
    _v("opskit-tracing", "opskit", "opskit, tracing only (100 % sampled)", {"tracing"}, {"spans"}),
    _v("opskit-ratelimit", "opskit", "opskit, Redis token bucket only", {"ratelimit"}, {"redis"}),
    # The two limiter backends below replace opskit-all's Redis limiter rather than join it: a process
    # decides with one backend.
    _v(
        "opskit-ratelimit-shm",
        "opskit",
        "opskit, token bucket in the shared-memory table (no Redis)",
        {"ratelimit", "ratelimit_shared_memory"},
        {"shared_table"},
    ),
    _v(
        "opskit-ratelimit-share",
        "opskit",
        "opskit, Redis token bucket with local shares (1 % of the bucket per call)",
        {"ratelimit", "ratelimit_local_share"},
        {"redis_share"},
    ),
    _v(
        "opskit-ratelimit-dynamic",
        "opskit",
        "opskit, Redis token bucket as a route limit whose rate an async function gives per key",
        {"ratelimit", "ratelimit_dynamic"},
        {"redis"},
    ),
    _v(
        "opskit-runtime",
        "opskit",
        "opskit, runtime health only (loop lag, blocked-loop watchdog, thread pool, background tasks)",
        {"runtime"},
        set(),
    ),
    _v(
        "opskit-context",
        "opskit",
        "opskit, request ID, access log sampled at 10 %, metrics with two extra labels, tracing; "
        "the endpoint annotates two fields",
        {"request_id", "logging", "metrics", "tracing", "annotate", "labels", "sampling"},
        {"request_id", "metrics", "spans"},
    ),
    _v(
        "opskit-otlp-metrics",
        "opskit",
        "opskit, Prometheus metrics and OTLP metric export every second",
        {"metrics", "otlp_metrics"},
        {"metrics", "otlp"},
    ),
    _v(
        "opskit-otlp-logs",
        "opskit",
        "opskit, JSON access log, every line also as an OTLP log record",
        {"logging", "otlp_logs"},
        {"access_log", "otlp"},
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
        "opskit, every feature on (OTLP metrics and logs too)",
        {*OPSKIT_FEATURES, *OTLP_FEATURES},
        {"request_id", "access_log", "metrics", "spans", "redis"},
    ),
    _v(
        "floor-request-id",
        "reference",
        "the least a request-ID middleware does: set a context variable, add a constant response header",
        {"request_id_floor"},
        {"request_id"},
    ),
    _v(
        "floor-access-log",
        "reference",
        "the least an access log does: one JSON line per request, a loop iteration's lines in one write",
        {"access_log_floor"},
        {"access_log"},
    ),
    _v(
        "floor-metrics",
        "reference",
        "the least a metrics middleware does: one counter increment, served on /metrics",
        {"metrics_floor"},
        {"metrics"},
    ),
    _v(
        "floor-tracing",
        "reference",
        "the least tracing does: one span with fixed attributes, encoded by a thread, sent over OTLP/HTTP",
        {"tracing_floor"},
        {"spans"},
    ),
    _v(
        "floor-ratelimit",
        "reference",
        "the least a Redis limiter does: one pipelined EVALSHA per request on one connection",
        {"ratelimit_floor"},
        {"redis"},
    ),
    _v("peer-correlation-id", "peer", "asgi-correlation-id", {"correlation_id"}, {"request_id"}),
    _v("peer-instrumentator", "peer", "prometheus-fastapi-instrumentator", {"instrumentator"}, {"metrics"}),
    _v(
        "peer-structlog-asgi",
        "peer",
        "structlog access log written well: pure ASGI middleware, orjson to bytes, opskit's fields",
        {"structlog_asgi"},
        {"access_log"},
    ),
    _v(
        "peer-structlog",
        "peer",
        "structlog JSON access-log middleware (the common @app.middleware recipe)",
        {"structlog"},
        {"access_log"},
    ),
    _v("peer-otel", "peer", "opentelemetry-instrumentation-fastapi, OTLP/HTTP export", {"otel"}, {"spans"}),
    _v("peer-fastapi-limiter", "peer", "fastapi-limiter with Redis", {"fastapi_limiter"}, {"redis"}),
    _v("peer-slowapi", "peer", "slowapi with Redis storage", {"slowapi"}, {"redis"}),
    _v(
        "peer-stack",
        "peer",
        "the strongest peers: asgi-correlation-id, instrumentator, pure-ASGI structlog, OTel, fastapi-limiter",
        {"correlation_id", "instrumentator", "structlog_asgi", "otel", "fastapi_limiter"},
        {"request_id", "access_log", "metrics", "spans", "redis"},
    ),
    _v(
        "peer-stack-common",
        "peer",
        "the five peers as commonly used (structlog @app.middleware recipe, slowapi)",
        {"correlation_id", "instrumentator", "structlog", "otel", "slowapi"},
        {"request_id", "access_log", "metrics", "spans", "redis"},
    ),
)

BY_NAME = {variant.name: variant for variant in VARIANTS}

# Rate limit that never rejects in a benchmark; both limiters get the same one.
NEVER_REJECTING_LIMIT = "1000000000/second"
# The share of a bucket opskit-ratelimit-share reserves per Redis call, and where -shm's table lives
# (in the server's work directory).
LOCAL_SHARE = 0.01
SHARED_TABLE = "ratelimit.table"


@dataclass(frozen=True)
class Target:
    """A row of the target table: an opskit variant, its goal, the peers it is compared with and
    the feature's floor (the least any implementation does)."""

    label: str
    variant: str
    min_ratio: float
    peers: tuple[str, ...]
    reference_peer_ratios: str
    floor: str = ""


TARGETS: tuple[Target, ...] = (
    Target(
        "request ID alone",
        "opskit-request-id",
        0.95,
        ("peer-correlation-id",),
        "asgi-correlation-id 0.85",
        "floor-request-id",
    ),
    Target(
        "metrics alone",
        "opskit-metrics",
        0.95,
        ("peer-instrumentator",),
        "instrumentator 0.74",
        "floor-metrics",
    ),
    Target(
        "JSON access log alone",
        "opskit-access-log",
        0.90,
        ("peer-structlog-asgi", "peer-structlog"),
        "pure-ASGI structlog 0.80, structlog recipe 0.25",
        "floor-access-log",
    ),
    Target(
        "tracing alone, 100 % sampled, OTLP export",
        "opskit-tracing",
        0.80,
        ("peer-otel",),
        "OTel FastAPI 0.26",
        "floor-tracing",
    ),
    Target(
        "Redis limiter alone",
        "opskit-ratelimit",
        0.85,
        ("peer-fastapi-limiter", "peer-slowapi"),
        "fastapi-limiter 0.35, slowapi 0.23",
        "floor-ratelimit",
    ),
    # No peer shares buckets among workers without Redis, nor leases Redis tokens: compared with bare only.
    Target("shared-memory limiter alone", "opskit-ratelimit-shm", 0.90, (), "slowapi 0.23 (with Redis)"),
    Target("Redis limiter, local shares", "opskit-ratelimit-share", 0.85, (), "slowapi 0.23"),
    Target("runtime health alone", "opskit-runtime", 0.98, (), "none: no peer measures the event loop"),
    Target(
        "everything on",
        "opskit-all",
        0.70,
        ("peer-stack", "peer-stack-common"),
        "strongest peers 0.12",
    ),
)

# "everything on" also requires p99 latency within this factor of bare's.
ALL_ON_MAX_P99_FACTOR = 1.5
# gunicorn 2 workers vs 1, all on: requests per CPU-second, 2 workers vs 1 (cores are the limit here).
SCALING_TARGET = 0.98


def select(names: list[str] | None) -> list[Variant]:
    """The variants named (bare always first, since ratios need it), or all of them."""
    if not names:
        return list(VARIANTS)
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {', '.join(BY_NAME)}")
    chosen = ["bare", *(name for name in names if name != "bare")]
    return [BY_NAME[name] for name in dict.fromkeys(chosen)]
