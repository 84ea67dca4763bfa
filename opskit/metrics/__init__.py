"""Prometheus metrics for opskit: RED metrics per route, exact across workers, with exemplars.

Other features declare their metrics through the same engine, at import or start-up::

    from opskit import metrics

    decisions = metrics.counter(
        "opskit_ratelimit_decisions_total", "Rate-limit decisions.", ["policy", "decision"]
    )
    backend_latency = metrics.histogram(
        "opskit_ratelimit_backend_duration_seconds", "Redis round trips.", buckets=(0.001, 0.005, 0.025, 0.1)
    )
    up = metrics.gauge("opskit_ratelimit_backend_up", "1 while Redis answers.", mode="min")

    decisions.labels("login", "allowed").inc()
    backend_latency.observe(0.0021)
    up.set(1)
    requests.labels(...).inc(trace_id=ex.trace_id)  # records an exemplar

Defining a metric again with the same shape returns the existing one. Label values must come
from a bounded set (a policy name, a reason), never from a request. Updates are thread-safe and
cost a lock plus a float add in shared memory (no syscall, no file I/O).

Several workers (gunicorn, ``uvicorn --workers``) write their own store in
``PROMETHEUS_MULTIPROC_DIR``; every scrape adds them up. gunicorn's ``on_starting`` hook calls
:func:`prepare_directory` and ``child_exit`` calls :func:`worker_exited`
(see :mod:`opskit.metrics.multiprocess`).
"""

from __future__ import annotations

from collections.abc import Sequence

from .multiprocess import prepare_directory, worker_exited
from .registry import (
    DEFAULT_BUCKETS,
    Counter,
    CounterChild,
    Gauge,
    GaugeChild,
    GaugeMode,
    Histogram,
    HistogramChild,
    Registry,
)

__all__ = [
    "DEFAULT_BUCKETS",
    "REGISTRY",
    "Counter",
    "CounterChild",
    "Gauge",
    "GaugeChild",
    "Histogram",
    "HistogramChild",
    "Registry",
    "counter",
    "gauge",
    "histogram",
    "prepare_directory",
    "worker_exited",
]

REGISTRY = Registry()
"""The process's registry: ``/metrics`` exposes every metric defined in it."""


def counter(name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
    """Define (or get) a counter in :data:`REGISTRY`; ``name`` ends in ``_total``."""
    return REGISTRY.counter(name, documentation, labelnames)


def gauge(name: str, documentation: str, labelnames: Sequence[str] = (), *, mode: GaugeMode = "sum") -> Gauge:
    """Define (or get) a gauge in :data:`REGISTRY`; across workers: ``sum``, ``max`` or ``min``."""
    return REGISTRY.gauge(name, documentation, labelnames, mode=mode)


def histogram(
    name: str, documentation: str, labelnames: Sequence[str] = (), *, buckets: Sequence[float] = DEFAULT_BUCKETS
) -> Histogram:
    """Define (or get) a histogram in :data:`REGISTRY` with upper bounds ``buckets``."""
    return REGISTRY.histogram(name, documentation, labelnames, buckets=buckets)
