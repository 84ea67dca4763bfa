"""Every metric of the overload feature, declared in opskit's metrics engine (exact across workers)."""

from __future__ import annotations

from typing import Final

from ..metrics.registry import Registry

__all__ = ["QUEUE_BUCKETS", "OverloadMetrics"]

QUEUE_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class OverloadMetrics:
    """Shed requests, queue time, in-flight requests and their cap, the saturation signal.

    Labels take fixed values only (the reason of a shed or an ignored queue time).
    """

    def __init__(self, registry: Registry) -> None:
        self.shed = registry.counter(
            "opskit_requests_shed_total",
            "Requests answered 503 at once because the worker was at its concurrency cap, by reason.",
            ("reason",),
        )
        self.queue = registry.histogram(
            "http_request_queue_seconds",
            "Seconds a request waited between the load balancer (X-Request-Start) and the app.",
            buckets=QUEUE_BUCKETS,
        )
        self.queue_ignored = registry.counter(
            "opskit_request_queue_time_ignored_total",
            "X-Request-Start values ignored: malformed, negative or more than an hour (clock skew), by reason.",
            ("reason",),
        )
        self.in_flight = registry.gauge(
            "opskit_in_flight_requests", "Requests a worker is serving (admitted, not yet finished).", mode="sum"
        )
        self.limit = registry.gauge(
            "opskit_in_flight_limit", "The concurrency cap of the workers (the current one with `auto`).", mode="sum"
        )
        self.saturation = registry.gauge(
            "opskit_saturation",
            "How close a worker is to what limits it (0..1): the largest of in-flight over cap, thread pool "
            "busy share and event-loop busy share (worst worker).",
            mode="max",
        )
