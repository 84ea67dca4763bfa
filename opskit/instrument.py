"""``instrument(app)`` and ``wrap(app)``: one call resolves the runtime and installs every feature."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from starlette.types import ASGIApp

from .component import Component
from .logging import configure_logging
from .middleware import OpskitMiddleware
from .runtime import Runtime, build_runtime
from .settings import Settings

__all__ = ["build_components", "instrument", "wrap"]

_MARK = "__opskit_runtime__"
App = TypeVar("App")
Factory = Callable[[Runtime], "Component | None"]


def _factories() -> list[Factory]:
    """Each feature's component factory, in the order their ``request_started`` hooks run.

    Request IDs come first (every other feature sees the ID), the access log last (it sees what
    every other feature added to the request).
    """
    from . import health, loop, request_ids
    from .logging import access
    from .logging import otlp as otlp_logs
    from .metrics import component as metrics
    from .metrics import otlp as otlp_metrics
    from .overload import component as overload
    from .ratelimit import component as ratelimit
    from .tracing import component as tracing

    return [
        request_ids.create_component,
        health.create_component,
        tracing.create_component,
        metrics.create_component,
        otlp_metrics.create_component,
        overload.create_component,  # its gate first: a shed request costs no rate-limit round trip
        ratelimit.create_component,
        loop.create_component,
        access.create_component,
        otlp_logs.create_component,
    ]


def build_components(runtime: Runtime) -> list[Component]:
    """The enabled features of ``runtime``, built from it."""
    components = [c for factory in _factories() if (c := factory(runtime)) is not None]
    _hand_over_fastapi_telemetry(runtime)
    return components


def _hand_over_fastapi_telemetry(runtime: Runtime) -> None:
    """Switch off FastAPI's native request metrics and log records where opskit provides them.

    FastAPI (0.165+) emits OpenTelemetry request metrics and exception log records as soon as a
    global meter or logger provider exists, and checks for those providers on every request.
    With opskit's Prometheus metrics and JSON logs on, they would duplicate them. Like the request
    spans (see ``opskit.tracing``), an app that passed its own provider to FastAPI keeps it.
    """
    config = getattr(runtime.app, "_telemetry", None)
    if not isinstance(config, dict):
        return
    settings = runtime.settings
    if settings.metrics_enabled and config.get("meter_provider") is None:
        config["metrics"] = False
    if settings.logging_enabled and config.get("logger_provider") is None:
        config["logs"] = False


def _runtime(app: object, settings: Settings | None, overrides: dict[str, Any]) -> Runtime:
    runtime = build_runtime(settings, app, **overrides)
    if runtime.settings.logging_enabled:
        configure_logging(runtime.settings)
    return runtime


def wrap(app: ASGIApp, settings: Settings | None = None, /, **overrides: Any) -> OpskitMiddleware:
    """Wrap any ASGI app in the opskit middleware and return the wrapped app.

    Wrapping an already wrapped app returns it unchanged. Keyword ``overrides`` take precedence
    over the environment (``wrap(app, metrics_enabled=False)``) for every feature of the process.
    """
    if isinstance(app, OpskitMiddleware):
        return app
    runtime = _runtime(app, settings, overrides)
    return OpskitMiddleware(app, runtime, build_components(runtime))


def instrument(app: App, settings: Settings | None = None, /, **overrides: Any) -> App:
    """Install opskit on a FastAPI or Starlette app; call it right after creating the app.

    The middleware goes outside Starlette's ``ServerErrorMiddleware``, so the request ID also
    reaches the 500 responses of unhandled exceptions and is readable in exception handlers. A
    second call on the same app does nothing. Keyword ``overrides`` take precedence over the
    environment for every feature of the process. Returns ``app``.
    """
    if getattr(app, _MARK, None) is not None:
        return app
    if not hasattr(app, "build_middleware_stack"):
        raise TypeError(f"instrument() takes a Starlette or FastAPI app, not {type(app).__name__}; use opskit.wrap()")
    if getattr(app, "middleware_stack", None) is not None:
        raise RuntimeError("instrument() must be called before the app starts serving")
    runtime = _runtime(app, settings, overrides)
    build_stack = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        # Components are built when the app first runs, in the process that serves it: a
        # preloading gunicorn master imports the app but must create no store, thread or socket.
        return OpskitMiddleware(build_stack(), runtime, build_components(runtime))

    # Starlette builds its stack lazily on the first call; opskit's layer goes outermost.
    setattr(app, "build_middleware_stack", build_middleware_stack)  # noqa: B010
    setattr(app, _MARK, runtime)
    return app
