"""OpenTelemetry tracing for opskit: a server span per request at a fraction of the usual cost.

``opskit.instrument(app)`` adds the tracing component when an exporter is configured
(``OTEL_TRACES_EXPORTER``, or an ``OTEL_EXPORTER_OTLP_*ENDPOINT``); with none, nothing is added and
tracing costs nothing. The pipeline is built in the serving process at lifespan startup (or by the
first request); under a gunicorn config of your own, :func:`shutdown` belongs in ``worker_exit``.
"""

from __future__ import annotations

from opentelemetry import trace

from .component import TracingComponent, create_component
from .lifecycle import init_worker, shutdown

__all__ = ["TracingComponent", "create_component", "get_tracer", "init_worker", "shutdown"]


def get_tracer(name: str) -> trace.Tracer:
    """A tracer for user code's own spans, children of the request's span.

    Safe at import time, even in a preloading gunicorn master: it creates nothing, and its spans
    go through the worker's pipeline once that exists (the same as ``trace.get_tracer(name)``:
    each worker installs opskit's provider as the global one).
    """
    return trace.get_tracer(name)
