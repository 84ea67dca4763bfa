"""slowapi's middlewares: default and application limits for endpoints without their own decorator."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import RateLimitExceeded
from .extension import Limiter, _rate_limit_exceeded_handler

__all__ = ["SlowAPIASGIMiddleware", "SlowAPIMiddleware"]


def _find_route_handler(routes: Iterable[BaseRoute], scope: Scope) -> Callable[..., Any] | None:
    handler = None
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL and hasattr(route, "endpoint"):
            handler = route.endpoint
    return handler


class SlowAPIASGIMiddleware:
    """Applies the limiter's ``application_limits`` and ``default_limits`` (``app.state.limiter``) to every
    endpoint that is neither decorated nor exempt, and adds the rate-limit headers when enabled.

    A pure ASGI middleware (``SlowAPIMiddleware`` is the same class: slowapi's is a
    ``BaseHTTPMiddleware``, with the same behaviour).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        app = scope.get("app")
        limiter = getattr(getattr(app, "state", None), "limiter", None)
        if not isinstance(limiter, Limiter) or not limiter.enabled:
            await self.app(scope, receive, send)
            return
        handler = _find_route_handler(getattr(app, "routes", ()), scope)
        name = f"{handler.__module__}.{handler.__name__}" if handler is not None else ""
        if handler is None or name in limiter._exempt_routes or name in limiter._static_routes:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            await limiter._check_middleware(request, name)
        except HTTPException as exc:
            response = await self._error_response(app, request, exc)
            await response(scope, receive, send)
            return
        state = getattr(request.state, "view_rate_limit", None)
        if state is None or not limiter._headers_enabled:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # The last evaluation wins, as in slowapi: a decorated endpoint's own limit, when it has one.
                headers = MutableHeaders(scope=message)
                for key, value in limiter._header_values(getattr(request.state, "view_rate_limit", state)):
                    headers[key] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)

    @staticmethod
    async def _error_response(app: Any, request: Request, exc: HTTPException) -> Response:
        if not isinstance(exc, RateLimitExceeded):  # the backend failed closed: opskit's 503
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        handlers = getattr(app, "exception_handlers", {})
        handler = handlers.get(type(exc), handlers.get(RateLimitExceeded, _rate_limit_exceeded_handler))
        response = handler(request, exc)
        if inspect.isawaitable(response):
            response = await response
        assert isinstance(response, Response)
        return response


class SlowAPIMiddleware(SlowAPIASGIMiddleware):
    """slowapi's ``SlowAPIMiddleware``: the same as :class:`SlowAPIASGIMiddleware`."""
