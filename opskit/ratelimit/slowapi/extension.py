"""slowapi's ``Limiter`` on opskit's token bucket: its constructor, decorators, answers and headers."""

from __future__ import annotations

import functools
import inspect
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from opskit.exchange import Exchange
from opskit.runtime import current
from opskit.settings.redis_url import parse_redis_url

from ..dependency import POLICY_FIELD, limiter_of
from ..limiter import RateLimiter
from ..policy import Policy
from ..rate import Rate
from ..responses import rejection_detail
from ..responses import retry_after as retry_seconds
from .errors import RateLimitExceeded, UnsupportedOption
from .util import get_remote_address
from .wrappers import Limit, LimitValue

__all__ = ["Limiter", "RateLimitState", "_rate_limit_exceeded_handler"]

F = TypeVar("F", bound=Callable[..., Any])
Cost = int | Callable[..., int]

_POLICY_NAME = re.compile(r"^[\x20-\x7e]{1,200}$")
_MAX_POLICIES = 1000


@dataclass(slots=True)
class RateLimitState:
    """What the headers of a limited endpoint report (``request.state.view_rate_limit``)."""

    rate: Rate
    remaining: int
    reset: float
    """Seconds until the bucket is full again."""
    retry_after: float
    """Seconds until a request passes (0 when this one passed)."""


def _rate_limit_exceeded_handler(request: Request, exc: Exception) -> Response:
    """slowapi's answer to :class:`RateLimitExceeded`: 429 ``{"error": "Rate limit exceeded: ..."}``,
    with the ``X-RateLimit-*`` headers and ``Retry-After`` when the limiter has ``headers_enabled``."""
    detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
    response = JSONResponse({"error": f"Rate limit exceeded: {detail}"}, status_code=429)
    limiter = getattr(exc, "limiter", None) or getattr(request.app.state, "limiter", None)
    if isinstance(limiter, Limiter):
        limiter._inject_headers(response, getattr(request.state, "view_rate_limit", None))
    return response


def _storage_url(uri: str | None) -> str | None:
    """The Redis URL a slowapi ``storage_uri`` names (``""``: in memory), else :class:`UnsupportedOption`."""
    if uri is None:
        return None
    url = uri.removeprefix("async+")
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        return ""
    if scheme == "redis+unix":
        url = "unix" + url[len("redis+unix") :]
    try:
        parse_redis_url(url)
    except ValueError as exc:
        raise UnsupportedOption(
            f"storage_uri with scheme {scheme!r}: {exc}. opskit keeps limits in memory (memory://) or in Redis "
            "(redis://, rediss://, redis+unix://, redis+sentinel://, redis+cluster://)"
        ) from None
    return url


def _slowapi_settings() -> list[str]:
    """slowapi's ``RATELIMIT_*`` settings from the environment or ``.env``: slowapi applies them, opskit does not."""
    names = [name for name in os.environ if name.startswith("RATELIMIT_")]
    dotenv = Path(".env")
    if dotenv.is_file():
        for line in dotenv.read_text(encoding="utf-8", errors="replace").splitlines():
            name = line.strip().removeprefix("export ").partition("=")[0].strip()
            if name.startswith("RATELIMIT_"):
                names.append(name)
    return sorted(set(names))


def _policy_name(name: str) -> str:
    return name if _POLICY_NAME.match(name) else "slowapi"


class Limiter:
    """slowapi's ``Limiter``; limits are opskit token buckets, decided without blocking the event loop.

    Every documented argument of slowapi's constructor is taken. Supported as in slowapi:
    ``key_func`` (taking the request, or nothing), ``default_limits``, ``application_limits``
    (with :class:`~.middleware.SlowAPIMiddleware`), ``headers_enabled``, ``storage_uri``
    (``memory://`` or a Redis URL; default: opskit's limiter, i.e. ``OPSKIT_REDIS_URL``),
    ``retry_after``, ``key_prefix``, ``enabled``, ``key_style``. ``strategy`` may be
    ``fixed-window`` (the default), which opskit's token bucket replaces; ``swallow_errors`` is
    superseded by opskit's failure policy (``OPSKIT_RATE_LIMIT_ON_ERROR``: a storage failure never
    answers 500). Any other value (another strategy, ``storage_options``, ``auto_check=False``,
    the in-memory fallback options, ``config_filename``, slowapi's ``RATELIMIT_*`` settings) raises
    :class:`~.errors.UnsupportedOption` here, saying what to use instead. ``limiter`` (opskit only)
    decides with an explicit :class:`~opskit.ratelimit.RateLimiter`.
    """

    def __init__(
        self,
        key_func: Callable[..., Any] = get_remote_address,
        default_limits: Sequence[LimitValue] = (),
        application_limits: Sequence[LimitValue] = (),
        headers_enabled: bool = False,
        strategy: str | None = None,
        storage_uri: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        auto_check: bool = True,
        swallow_errors: bool = False,
        in_memory_fallback: Sequence[LimitValue] = (),
        in_memory_fallback_enabled: bool = False,
        retry_after: str | None = None,
        key_prefix: str = "",
        enabled: bool = True,
        config_filename: str | None = None,
        key_style: str = "url",
        *,
        limiter: RateLimiter | None = None,
    ) -> None:
        if strategy not in (None, "fixed-window"):
            raise UnsupportedOption(
                f"strategy={strategy!r}: opskit limits with a token bucket, which replaces 'fixed-window' "
                "(N per period on average, bursts of at most N); it has no moving or sliding window"
            )
        if storage_options:
            raise UnsupportedOption(
                "storage_options: opskit configures Redis from its settings (OPSKIT_REDIS_TIMEOUT, "
                "OPSKIT_REDIS_MAX_CONNECTIONS, TLS options in the URL)"
            )
        if not auto_check:
            raise UnsupportedOption("auto_check=False: opskit checks limits in the decorator; remove the decorator")
        if in_memory_fallback or in_memory_fallback_enabled:
            raise UnsupportedOption(
                "in_memory_fallback: set OPSKIT_RATE_LIMIT_ON_ERROR=memory instead (when Redis fails, every route "
                "keeps its own limits in per-process buckets)"
            )
        if retry_after not in (None, "http-date", "delta-seconds"):
            raise UnsupportedOption(f"retry_after={retry_after!r}: expected 'http-date' or 'delta-seconds'")
        if key_style not in ("url", "endpoint"):
            raise UnsupportedOption(f"key_style={key_style!r}: expected 'url' or 'endpoint'")
        if config_filename is not None:
            raise UnsupportedOption("config_filename: opskit reads no slowapi config file; pass the Limiter arguments")
        if found := _slowapi_settings():
            raise UnsupportedOption(
                f"{', '.join(found)} (environment or .env): opskit does not read slowapi's RATELIMIT_* settings; "
                "pass them as Limiter arguments or use OPSKIT_* settings"
            )
        self.enabled = enabled
        self._key_func = key_func
        self._headers_enabled = headers_enabled
        self._storage = _storage_url(storage_uri)
        self._retry_after = retry_after
        self._key_prefix = key_prefix
        self._key_style = key_style
        self._swallow_errors = swallow_errors
        self._explicit = limiter
        self._default_limits = [self._declare(v, key_func, None, policy="default") for v in default_limits]
        self._application_limits = [
            self._declare(v, key_func, "global", policy="application") for v in application_limits
        ]
        self._route_limits: dict[str, list[Limit]] = {}
        self._exempt_routes: set[str] = set()
        # Endpoints with a static limit: the middleware leaves them to their decorator. As in slowapi,
        # an endpoint with only callable limits gets the application and default limits there too.
        self._static_routes: set[str] = set()
        self._policies: dict[tuple[str, str], Policy] = {}

    @staticmethod
    def _declare(
        value: LimitValue,
        key_func: Callable[..., Any],
        scope: str | Callable[[str], str] | None,
        *,
        policy: str,
        per_method: bool = False,
        methods: Sequence[str] | None = None,
        error_message: str | Callable[[], str] | None = None,
        exempt_when: Callable[..., bool] | None = None,
        cost: Cost = 1,
        override_defaults: bool = False,
    ) -> Limit:
        return Limit(
            value,
            key_func,
            scope,
            per_method,
            methods,
            error_message,
            exempt_when,
            cost,
            override_defaults,
            _policy_name(policy),
        )

    def limit(
        self,
        limit_value: LimitValue,
        key_func: Callable[..., Any] | None = None,
        per_method: bool = False,
        methods: Sequence[str] | None = None,
        error_message: str | Callable[[], str] | None = None,
        exempt_when: Callable[..., bool] | None = None,
        cost: Cost = 1,
        override_defaults: bool = True,
    ) -> Callable[[F], F]:
        """Limit the decorated endpoint, which takes ``request`` (or ``websocket``), as in slowapi.

        ``limit_value`` is a rate text or a callable returning one (with a ``key`` parameter it gets
        the request's key); ``key_func`` overrides the limiter's; ``per_method`` gives each HTTP method
        its own bucket; ``methods`` limits only those; ``error_message`` (text or callable) replaces
        the 429's message; ``exempt_when`` (taking the request, or nothing) skips the limit when true;
        ``cost`` (int, or callable taking the request) is the tokens a request takes;
        ``override_defaults=False`` applies the default limits too.
        """
        return self._decorator(
            limit_value, key_func, None, per_method, methods, error_message, exempt_when, cost, override_defaults
        )

    def shared_limit(
        self,
        limit_value: LimitValue,
        scope: str | Callable[[str], str],
        key_func: Callable[..., Any] | None = None,
        error_message: str | Callable[[], str] | None = None,
        exempt_when: Callable[..., bool] | None = None,
        cost: Cost = 1,
        override_defaults: bool = True,
    ) -> Callable[[F], F]:
        """One bucket for every endpoint decorated with the same ``scope`` (a text, or a callable of the
        endpoint's key); the other arguments as in :meth:`limit`."""
        return self._decorator(
            limit_value, key_func, scope, False, None, error_message, exempt_when, cost, override_defaults
        )

    def exempt(self, func: F) -> F:
        """Exempt an endpoint from the default and application limits."""
        self._exempt_routes.add(f"{func.__module__}.{func.__name__}")
        return func

    def _decorator(
        self,
        limit_value: LimitValue,
        key_func: Callable[..., Any] | None,
        scope: str | Callable[[str], str] | None,
        per_method: bool,
        methods: Sequence[str] | None,
        error_message: str | Callable[[], str] | None,
        exempt_when: Callable[..., bool] | None,
        cost: Cost,
        override_defaults: bool,
    ) -> Callable[[F], F]:
        def decorate(func: F) -> F:
            name = f"{func.__module__}.{func.__name__}"
            policy = scope if isinstance(scope, str) else name
            limit = self._declare(
                limit_value,
                key_func or self._key_func,
                scope,
                policy=policy,
                per_method=per_method,
                methods=methods,
                error_message=error_message,
                exempt_when=exempt_when,
                cost=cost,
                override_defaults=override_defaults,
            )
            self._route_limits.setdefault(name, []).append(limit)
            if isinstance(limit_value, str):
                self._static_routes.add(name)
            parameters = list(inspect.signature(func).parameters)
            index = next((i for i, p in enumerate(parameters) if p in ("request", "websocket")), None)
            if index is None:
                raise Exception(f'No "request" or "websocket" argument on function "{func}"')
            if getattr(func, "_opskit_limited", False):
                return func  # stacked decorators: the inner wrapper checks every limit of the endpoint
            is_async = inspect.iscoroutinefunction(func)

            @functools.wraps(func)
            async def endpoint(*args: Any, **kwargs: Any) -> Any:
                request = None
                if self.enabled:
                    request = kwargs.get(parameters[index], args[index] if len(args) > index else None)
                    if not isinstance(request, HTTPConnection):
                        raise Exception("parameter `request` must be an instance of starlette.requests.Request")
                    if not getattr(request.state, "_rate_limiting_complete", False):
                        await self._check_route(request, name)
                        request.state._rate_limiting_complete = True
                result = await func(*args, **kwargs) if is_async else await run_in_threadpool(func, *args, **kwargs)
                if request is not None and self._headers_enabled:
                    self._add_headers(request, result if isinstance(result, Response) else kwargs.get("response"))
                return result

            endpoint._opskit_limited = True  # type: ignore[attr-defined]
            return endpoint  # type: ignore[return-value]

        return decorate

    def _endpoint_key(self, request: HTTPConnection, name: str) -> str:
        return str(request.scope.get("path", "")) if self._key_style == "url" else name

    async def _check_route(self, request: HTTPConnection, name: str) -> None:
        """The limits of a decorated endpoint (and the defaults, when every one asks for them)."""
        if name in self._exempt_routes:
            return
        limits = list(self._route_limits.get(name, ()))
        if all(not limit.override_defaults for limit in limits):
            limits += self._default_limits
        await self._evaluate(request, self._endpoint_key(request, name), limits)

    async def _check_middleware(self, request: HTTPConnection, name: str) -> None:
        """The application and default limits of an endpoint without its own (the middleware's part)."""
        limits = self._application_limits + self._default_limits
        await self._evaluate(request, self._endpoint_key(request, name), limits)

    def _limiter(self, scope: Mapping[str, Any]) -> RateLimiter:
        if self._explicit is not None:
            return self._explicit
        ex = Exchange.of(scope)  # type: ignore[arg-type]
        runtime = ex.runtime if ex is not None else current()
        url = self._storage
        if url is None or url == runtime.settings.redis_url:
            return limiter_of(runtime)
        built: RateLimiter = runtime.service(
            "ratelimit:" + url,
            lambda rt: RateLimiter.from_settings(rt.settings.model_copy(update={"redis_url": url})),
        )
        return built

    def _policy(self, name: str, text: str) -> Policy:
        policy = self._policies.get((name, text))
        if policy is None:
            policy = Policy.build(name, text)
            if len(self._policies) < _MAX_POLICIES:
                self._policies[(name, text)] = policy
        return policy

    async def _evaluate(self, request: HTTPConnection, endpoint: str, limits: Sequence[Limit]) -> None:
        """Spend a token of each applicable limit in turn; the first that refuses raises (as slowapi does)."""
        state: RateLimitState | None = None
        method = str(request.scope.get("method", "GET"))
        limiter = None
        for limit in limits:
            if limit.exempt(request) or not limit.applies_to(method):
                continue
            key = limit.key(request)
            scope = limit.scope_for(endpoint)
            if not key or not scope:
                continue  # slowapi skips a limit with an empty key or scope
            if limit.per_method:
                scope += ":" + method
            text = limit.text(key)
            limiter = limiter or self._limiter(request.scope)
            try:
                policy = self._policy(limit.policy, text)
            except ValueError as exc:  # a callable returned a bad rate: slowapi skips that limit too
                limiter.log.warning("slowapi_rate", f"skipping a slowapi limit of {limit.policy}: {exc}")
                continue
            # The scope (a path with key_style="url") and the rate text keep buckets apart as slowapi's
            # storage keys do; they are hashed into the key, never labels.
            client_key = "\x00".join((self._key_prefix, key, scope, text))
            decision = await limiter.hit(policy, client_key, limit.spend(request))
            if state is None or not decision.allowed:
                # A refused request reports 0 left, as slowapi does (the tokens left are fewer than it needs).
                remaining = decision.remaining if decision.allowed else 0
                state = RateLimitState(decision.rate, remaining, decision.reset, decision.retry_after)
            if not decision.allowed:
                request.state.view_rate_limit = state
                ex = Exchange.of(request.scope)
                if ex is not None:
                    ex.annotate(**{POLICY_FIELD: policy.name})
                if decision.unavailable:
                    retry = str(retry_seconds(decision))
                    raise HTTPException(503, rejection_detail(decision), headers={"Retry-After": retry})
                refused = RateLimitExceeded(limit, rate=decision.rate)
                refused.limiter = self
                raise refused
        request.state.view_rate_limit = state

    def _header_values(self, state: RateLimitState) -> list[tuple[str, str]]:
        """slowapi's headers: ``X-RateLimit-Limit/-Remaining/-Reset`` (epoch seconds) and ``Retry-After``."""
        now = time.time()
        wait = state.retry_after if state.retry_after > 0 else state.reset
        if self._retry_after == "http-date":
            retry = formatdate(now + wait, usegmt=True)
        else:
            retry = str(max(1, math.ceil(wait - 1e-9)) if state.retry_after > 0 else math.ceil(wait))
        return [
            ("X-RateLimit-Limit", str(state.rate.burst)),
            ("X-RateLimit-Remaining", str(state.remaining)),
            ("X-RateLimit-Reset", str(math.ceil(now + state.reset))),
            ("Retry-After", retry),
        ]

    def _inject_headers(self, response: Response, state: RateLimitState | None) -> Response:
        """Add the rate-limit headers of ``state`` to ``response`` (when enabled), as slowapi's method does."""
        if self.enabled and self._headers_enabled and state is not None:
            for name, value in self._header_values(state):
                response.headers[name] = value
        return response

    def _add_headers(self, request: HTTPConnection, response: object) -> None:
        state = getattr(request.state, "view_rate_limit", None)
        if state is None:
            return
        if isinstance(response, Response):
            self._inject_headers(response, state)
            return
        # No Response to write to (slowapi raises here): opskit's middleware adds them at response start.
        ex = Exchange.of(request.scope)
        if ex is not None:
            ex.response_headers += [(k.lower().encode(), v.encode()) for k, v in self._header_values(state)]
