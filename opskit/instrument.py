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
    # -- end of feature components --------------------------------------------------------------
    if settings.logging_enabled and settings.access_log_enabled:
        components.append(AccessLog(settings))
    return components


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
