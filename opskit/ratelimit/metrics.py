"""Every metric the limiter records, behind one small class (the one place to port to another engine)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from .decision import Outcome

__all__ = ["RateLimitMetrics", "default_metrics"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class RateLimitMetrics:
    """``opskit_ratelimit_decisions_total{policy,decision}``, backend latency and errors by reason.

    Labels are policy names and fixed reasons, never a client key.
    """

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self._decisions = Counter(
            "opskit_ratelimit_decisions",
            "Rate-limit decisions by policy and outcome (allowed, limited, error_allowed, error_rejected).",
            ["policy", "decision"],
            registry=registry,
        )
        self._latency = Histogram(
            "opskit_ratelimit_backend_duration_seconds",
            "Round-trip time of one rate-limit backend call (a batch of decisions).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._errors = Counter(
            "opskit_ratelimit_backend_errors",
            "Rate-limit backend failures by reason (timeout, connection, response, circuit_open...).",
            ["reason"],
            registry=registry,
        )
        self._decision_children: dict[tuple[str, str], Counter] = {}
        self._error_children: dict[str, Counter] = {}

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
    """The process-wide instance registered in prometheus_client's default registry."""
    global _default
    if _default is None:
        _default = RateLimitMetrics()
    return _default
