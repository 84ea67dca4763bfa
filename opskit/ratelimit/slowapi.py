"""slowapi's shape on opskit's token bucket: move an app by changing its imports.

::

    # from slowapi import Limiter, _rate_limit_exceeded_handler
    # from slowapi.errors import RateLimitExceeded
    # from slowapi.util import get_remote_address
    from opskit.ratelimit.slowapi import Limiter, RateLimitExceeded, _rate_limit_exceeded_handler, get_remote_address

    limiter = Limiter(key_func=get_remote_address)
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)

    @app.get("/home")
    @limiter.limit("5/minute")
    async def home(request: Request): ...

Decisions are async (the event loop never blocks on Redis), use the limiter opskit's middleware
installed (Redis when ``OPSKIT_REDIS_URL`` is set), and follow opskit's failure policy.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .dependency import check
from .limiter import RateLimiter
from .policy import Policy, client_address

__all__ = ["Limiter", "RateLimitExceeded", "_rate_limit_exceeded_handler", "get_remote_address"]

F = TypeVar("F", bound=Callable[..., Any])
LimitValue = str | Callable[[], str]
Cost = int | Callable[[Request], int]


class RateLimitExceeded(HTTPException):
    """Raised by a limited endpoint (a 429 HTTPException, as in slowapi)."""


def get_remote_address(request: Request) -> str:
    """The client address: proxy-aware under opskit's middleware (trusted proxies only), else the peer."""
    return client_address(request.scope) or "127.0.0.1"


def _rate_limit_exceeded_handler(request: Request, exc: Exception) -> Response:
    """Answer a :class:`RateLimitExceeded` with 429, ``{"detail": ...}`` and its headers."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def _find_request(args: Sequence[Any], kwargs: dict[str, Any]) -> Request:
    request = kwargs.get("request", kwargs.get("websocket"))
    if request is None:
        request = next((a for a in args if isinstance(a, Request)), None)
    if not isinstance(request, Request):
        raise Exception("parameter `request` must be an instance of starlette.requests.Request")
    return request


class Limiter:
    """slowapi's ``Limiter`` constructor and decorators; limits are opskit token buckets.

    ``key_func``, ``headers_enabled``, ``enabled`` and ``limiter`` (an explicit
    :class:`~opskit.ratelimit.RateLimiter`) are honoured; slowapi's storage options are accepted and
    ignored (storage is opskit's: ``OPSKIT_REDIS_URL``). Use ``OPSKIT_RATE_LIMIT`` for ``default_limits``.
    ``headers_enabled`` adds the RateLimit fields to endpoints taking ``response: Response``.
    """

    def __init__(
        self,
        key_func: Callable[[Request], str] = get_remote_address,
        *,
        headers_enabled: bool = False,
        enabled: bool = True,
        limiter: RateLimiter | None = None,
        **ignored: Any,
    ) -> None:
        self.key_func = key_func
        self.headers_enabled = headers_enabled
        self.enabled = enabled
        self.limiter = limiter

    def limit(
        self,
        limit_value: LimitValue,
        key_func: Callable[[Request], str] | None = None,
        per_method: bool = False,
        methods: list[str] | None = None,
        error_message: str | None = None,
        exempt_when: Callable[[], bool] | None = None,
        cost: Cost = 1,
        **ignored: Any,
    ) -> Callable[[F], F]:
        """Limit the decorated endpoint; it must take ``request: Request`` (as with slowapi).

        ``limit_value`` may be a callable returning the rate text (read on every request);
        ``cost`` a callable taking the request; ``methods`` limits only those HTTP methods;
        ``per_method`` gives each method its own buckets.
        """
        return self._decorator(limit_value, None, key_func, per_method, methods, error_message, exempt_when, cost)

    def shared_limit(
        self,
        limit_value: LimitValue,
        scope: str,
        key_func: Callable[[Request], str] | None = None,
        error_message: str | None = None,
        exempt_when: Callable[[], bool] | None = None,
        cost: Cost = 1,
        **ignored: Any,
    ) -> Callable[[F], F]:
        """One bucket shared by every endpoint decorated with the same ``scope``."""
        return self._decorator(limit_value, scope, key_func, False, None, error_message, exempt_when, cost)

    def exempt(self, func: F) -> F:
        """Mark an endpoint as exempt (a no-op: only decorated endpoints are limited)."""
        return func

    def _decorator(
        self,
        limit_value: LimitValue,
        shared_scope: str | None,
        key_func: Callable[[Request], str] | None,
        per_method: bool,
        methods: list[str] | None,
        error_message: str | None,
        exempt_when: Callable[[], bool] | None,
        cost: Cost,
    ) -> Callable[[F], F]:
        chosen = key_func or self.key_func
        key: Any = "ip" if chosen is get_remote_address else chosen
        only = frozenset(m.upper() for m in methods) if methods else None

        def decorate(func: F) -> F:
            name = shared_scope or f"{func.__module__}.{func.__name__}"
            policies: dict[tuple[str, str], Policy] = {}

            def policy_for(request: Request) -> Policy:
                text = limit_value() if callable(limit_value) else limit_value
                full_name = f"{name}:{request.method}" if per_method else name
                policy = policies.get((full_name, text))
                if policy is None:
                    policy = Policy.build(full_name, text, key)
                    if len(policies) < 100:
                        policies[(full_name, text)] = policy
                return policy

            policy_for_static = None if callable(limit_value) or per_method else Policy.build(name, limit_value, key)
            is_async = inspect.iscoroutinefunction(func)

            @functools.wraps(func)
            async def endpoint(*args: Any, **kwargs: Any) -> Any:
                if self.enabled and not (exempt_when is not None and exempt_when()):
                    request = _find_request(args, kwargs)
                    if only is None or request.method in only:
                        response = kwargs.get("response") if self.headers_enabled else None
                        try:
                            await check(
                                request,
                                policy_for_static or policy_for(request),
                                response if isinstance(response, Response) else None,
                                self.limiter,
                                cost=cost(request) if callable(cost) else cost,
                                error=RateLimitExceeded,
                            )
                        except RateLimitExceeded as exc:
                            if error_message is not None:
                                exc.detail = error_message
                            raise
                if is_async:
                    return await func(*args, **kwargs)
                return await run_in_threadpool(func, *args, **kwargs)

            return endpoint  # type: ignore[return-value]

        return decorate
