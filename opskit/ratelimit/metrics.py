"""Every metric the limiter records, declared in opskit's metrics engine (exact across workers)."""

from __future__ import annotations

from .. import metrics as _metrics
from ..metrics.registry import Counter, CounterChild, Registry
from .decision import Outcome

__all__ = ["LATENCY_BUCKETS", "RateLimitMetrics", "default_metrics"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class RateLimitMetrics:
    """``opskit_ratelimit_decisions_total{policy,decision}``, backend latency and errors by reason.

    Labels are policy names and fixed reasons, never a client key.
    """

    def __init__(self, registry: Registry | None = None) -> None:
        registry = registry if registry is not None else _metrics.REGISTRY
        self._decisions: Counter = registry.counter(
            "opskit_ratelimit_decisions_total",
            "Rate-limit decisions by policy and outcome (allowed, limited, error_allowed, error_rejected).",
            ["policy", "decision"],
        )
        self._latency = registry.histogram(
            "opskit_ratelimit_backend_duration_seconds",
            "Round-trip time of one rate-limit backend call (a batch of decisions).",
            buckets=LATENCY_BUCKETS,
        )
        self._errors: Counter = registry.counter(
            "opskit_ratelimit_backend_errors_total",
            "Rate-limit backend failures by reason (timeout, connection, response, circuit_open...).",
            ["reason"],
        )
        self._decision_children: dict[tuple[str, str], CounterChild] = {}
        self._error_children: dict[str, CounterChild] = {}

    def decision(self, policy: str, outcome: Outcome) -> None:
        """Count one decision."""
        child = self._decision_children.get((policy, outcome))
        if child is None:
            child = self._decision_children[(policy, outcome)] = self._decisions.labels(policy, outcome)
        child.inc()

    def backend_latency(self, seconds: float) -> None:
        """Record one backend round trip."""
        self._latency.observe(seconds)

    def backend_error(self, reason: str) -> None:
        """Count one failed decision by reason."""
        child = self._error_children.get(reason)
        if child is None:
            child = self._error_children[reason] = self._errors.labels(reason)
        child.inc()


_default: RateLimitMetrics | None = None


def default_metrics() -> RateLimitMetrics:
    """The process-wide instance, in the registry ``/metrics`` exposes."""
    global _default
    if _default is None:
        _default = RateLimitMetrics()
    return _default
