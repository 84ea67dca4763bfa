"""OpenTelemetry tracing for opskit: a server span per request at a fraction of the usual cost.

``opskit.instrument(app)`` adds the tracing component when an exporter is configured
(``OTEL_TRACES_EXPORTER``, or an ``OTEL_EXPORTER_OTLP_*ENDPOINT``); with none, nothing is added and
tracing costs nothing. Under gunicorn, call :func:`init_worker` from ``post_fork`` and
:func:`shutdown` from ``worker_exit``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from ._component import TracingComponent
from ._lifecycle import init_worker, shutdown
from ._pipeline import check_settings

if TYPE_CHECKING:
    from opskit.settings import Settings

__all__ = ["TracingComponent", "create_component", "get_tracer", "init_worker", "shutdown"]


def create_component(settings: Settings, app: Any = None) -> TracingComponent | None:
    """The tracing component for ``settings``, or None when tracing is off or exports nowhere.

    Creates no thread and no connection (safe in a preloading gunicorn master); raises
    :class:`opskit.settings.ConfigError` when the configuration cannot work here (``grpc`` without
    ``opskit[grpc]``).
    """
    if not settings.tracing_enabled or settings.traces_exporter_resolved == "none":
        return None
    check_settings(settings)
    _hand_over_fastapi_tracing(app)
    return TracingComponent(settings)


def _hand_over_fastapi_tracing(app: Any) -> None:
    """Switch off FastAPI's native request spans (``FastAPI(telemetry={"tracing": False})``).

    FastAPI starts its own SERVER span as soon as a global tracer provider exists, outside opskit's
    middleware: every request would be traced twice, at twice the cost. An app that passed its
    own ``tracer_provider`` to FastAPI keeps its choice.
    """
    config = getattr(app, "_telemetry", None)
    if isinstance(config, dict) and config.get("tracer_provider") is None:
        config["tracing"] = False


def get_tracer(name: str) -> trace.Tracer:
    """A tracer for user code's own spans, children of the request's span.

    Safe at import time, even in a preloading gunicorn master: it creates nothing, and its spans
    go through the worker's pipeline once that exists (the same as ``trace.get_tracer(name)``:
    each worker installs opskit's provider as the global one).
    """
    return trace.get_tracer(name)
