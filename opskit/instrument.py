"""``instrument(app)`` and ``wrap(app)``: one call installs every opskit feature."""

from __future__ import annotations

from typing import Any, TypeVar

from starlette.types import ASGIApp

from ._logging import configure_logging
from .access_log import AccessLog
from .component import Component
from .middleware import OpskitMiddleware
from .routes import RouteTemplates
from .settings import Settings, load_settings

__all__ = ["instrument", "wrap"]

_MARK = "__opskit_settings__"
App = TypeVar("App")


def build_components(settings: Settings, app: object) -> list[Component]:
    """The enabled features, in the order their ``request_started`` hooks run."""
    components: list[Component] = []
    # -- feature components: each feature registers itself here --------------------------------
    if settings.tracing_enabled:
        from .tracing import create_component as create_tracing

        tracing = create_tracing(settings, app)
        if tracing is not None:
            components.append(tracing)
    if settings.metrics_enabled:
        from .metrics.component import create_component as metrics_component

        components.append(metrics_component(settings, app))
    from .ratelimit.component import create_component as ratelimit_component

    if (ratelimit := ratelimit_component(settings, app)) is not None:
        components.append(ratelimit)
    if settings.runtime_enabled or settings.threadpool_size is not None:
        from .loop import create_component as runtime_component

        if (runtime := runtime_component(settings, app)) is not None:
            components.append(runtime)
    # -- end of feature components --------------------------------------------------------------
    if settings.logging_enabled and settings.access_log_enabled:
        components.append(AccessLog(settings))
    _hand_over_fastapi_telemetry(app, settings)
    return components


def _hand_over_fastapi_telemetry(app: object, settings: Settings) -> None:
    """Switch off FastAPI's native request metrics and log records where opskit provides them.

    FastAPI (0.165+) emits OpenTelemetry request metrics and exception log records as soon as a
    global meter or logger provider exists, and checks for those providers on every request.
    With opskit's Prometheus metrics and JSON logs on, they would duplicate them. Like the request
    spans (see ``opskit.tracing``), an app that passed its own provider to FastAPI keeps it.
    """
    config = getattr(app, "_telemetry", None)
    if not isinstance(config, dict):
        return
    if settings.metrics_enabled and config.get("meter_provider") is None:
        config["metrics"] = False
    if settings.logging_enabled and config.get("logger_provider") is None:
        config["logs"] = False


def _middleware(app: ASGIApp, routes_of: object, settings: Settings) -> OpskitMiddleware:
    return OpskitMiddleware(
        app,
        settings=settings,
        components=build_components(settings, routes_of),
        routes=RouteTemplates(routes_of, settings.unmatched_route),
    )


def wrap(app: ASGIApp, settings: Settings | None = None, /, **overrides: Any) -> OpskitMiddleware:
    """Wrap any ASGI app in the opskit middleware and return the wrapped app.

    Wrapping an already wrapped app returns it unchanged. Keyword ``overrides`` take precedence
    over the environment (``wrap(app, metrics_enabled=False)``).
    """
    if isinstance(app, OpskitMiddleware):
        return app
    settings = load_settings(settings, **overrides)
    if settings.logging_enabled:
        configure_logging(settings)
    return _middleware(app, app, settings)


def instrument(app: App, settings: Settings | None = None, /, **overrides: Any) -> App:
    """Install opskit on a FastAPI or Starlette app; call it right after creating the app.

    The middleware goes outside Starlette's ``ServerErrorMiddleware``, so the request ID also
    reaches the 500 responses of unhandled exceptions and is readable in exception handlers. A
    second call on the same app does nothing. Returns ``app``.
    """
    if getattr(app, _MARK, None) is not None:
        return app
    if not hasattr(app, "build_middleware_stack"):
        raise TypeError(f"instrument() takes a Starlette or FastAPI app, not {type(app).__name__}; use opskit.wrap()")
    if getattr(app, "middleware_stack", None) is not None:
        raise RuntimeError("instrument() must be called before the app starts serving")
    settings = load_settings(settings, **overrides)
    if settings.logging_enabled:
        configure_logging(settings)
    build_stack = app.build_middleware_stack
    outer = _middleware  # bound now so that the closure does not see later rebinding

    def build_middleware_stack() -> ASGIApp:
        return outer(build_stack(), app, settings)

    # Starlette builds its stack lazily on the first call; opskit's layer goes outermost.
    setattr(app, "build_middleware_stack", build_middleware_stack)  # noqa: B010
    setattr(app, _MARK, settings)
    return app
