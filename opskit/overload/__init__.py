"""Overload protection and the signals to scale on.

An async worker accepts every request it is offered; past what it can serve, each one waits longer
until health checks fail, while CPU (the usual scaling signal) stays low behind a saturated
thread pool or a blocked loop. This feature gives each worker:

* a concurrency cap (``OPSKIT_MAX_IN_FLIGHT``, fixed or ``auto``): a request beyond it is answered
  503 with ``Retry-After`` at once, before the app (and any other gate) runs, and counted in
  ``opskit_requests_shed_total{reason}``; health probes and ``/metrics`` are never shed;
* queue time (``http_request_queue_seconds``) from the load balancer's ``X-Request-Start``,
  believed from trusted proxies only;
* one saturation signal, ``opskit_saturation`` (0..1), to scale on (see :mod:`.saturation`).
"""

from __future__ import annotations

from .component import (
    SAMPLE_INTERVAL,
    OverloadComponent,
    QueueTimeComponent,
    QueueTimeSheddingComponent,
    SheddingComponent,
    create_component,
    shed_app,
)
from .limit import AdaptiveLimit, FixedLimit, Limit
from .metrics import OverloadMetrics
from .queue_time import MAX_QUEUE_SECONDS, parse_request_start, queue_seconds
from .saturation import Saturation

__all__ = [
    "MAX_QUEUE_SECONDS",
    "SAMPLE_INTERVAL",
    "AdaptiveLimit",
    "FixedLimit",
    "Limit",
    "OverloadComponent",
    "OverloadMetrics",
    "QueueTimeComponent",
    "QueueTimeSheddingComponent",
    "Saturation",
    "SheddingComponent",
    "create_component",
    "parse_request_start",
    "queue_seconds",
    "shed_app",
]
