"""Per-route limits as a FastAPI dependency: ``Depends(RateLimit("5/second burst=10"))``."""

from __future__ import annotations

import inspect
from collections.abc import MutableMapping
from typing import Any, NoReturn

from starlette.exceptions import HTTPException, WebSocketException
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.websockets import WebSocket

from opskit.exchange import Exchange
from opskit.runtime import Runtime, current

from .charges import Tab, open_tab
from .decision import Decision
from .dynamic import CostSource, PolicyVariants, RateCache, RateSource, resolve
from .limiter import RateLimiter
from .policy import KeyFunc, Policy
from .responses import rate_limit_headers, rejection_detail, retry_after
from .websocket import limit_messages

__all__ = ["POLICY_FIELD", "DynamicRateLimit", "RateLimit", "check", "limiter_for", "limiter_of", "refuse"]

# The template rates of a limit whose rates a function computes (never used for a decision).
_UNSET_RATES = "1/second"

#: The access-log field naming the policy that refused a request.
POLICY_FIELD = "ratelimit_policy"


def limiter_of(runtime: Runtime) -> RateLimiter:
    """The runtime's limiter (built from its settings on first use): the middleware's and route limits'."""
    limiter: RateLimiter = runtime.service("ratelimit", lambda rt: RateLimiter.from_settings(rt.settings))
    return limiter


def limiter_for(scope: MutableMapping[str, Any], explicit: RateLimiter | None = None) -> RateLimiter:
    """The limiter to use: the explicit one, else the runtime's of opskit's middleware above, else
    the process's (for apps that use route limits without ``instrument()``)."""
    if explicit is not None:
        return explicit
    ex = Exchange.of(scope)
    return limiter_of(ex.runtime if ex is not None else current())


def rejection(policy: Policy, decision: Decision) -> HTTPException:
    """The HTTPException a rejected route answers with (429, or 503 when the backend failed closed)."""
    headers = {"Retry-After": str(retry_after(decision))}
    if not decision.unavailable:
        headers.update((k.decode(), v.decode()) for k, v in rate_limit_headers(policy.name, decision))
    return HTTPException(503 if decision.unavailable else 429, rejection_detail(decision), headers=headers)


async def check(
    request: HTTPConnection,
    policy: Policy,
    response: Response | None = None,
    limiter: RateLimiter | None = None,
    cost: int | None = None,
    error: type[HTTPException] | None = None,
) -> Decision | None:
    """Apply ``policy`` to ``request``: raise on rejection, add the RateLimit fields to ``response``."""
    client_key = policy.key(request.scope)
    if client_key is None:
        return None
    active = limiter_for(request.scope, limiter)
    decision = await active.hit(policy, client_key, cost)
    if not decision.allowed:
        refuse(request, policy, decision, error)
    if response is not None and active.headers:
        for name, value in rate_limit_headers(policy.name, decision, legacy=active.legacy_headers):
            response.headers.append(name.decode(), value.decode())
    return decision


def refuse(
    request: HTTPConnection, policy: Policy, decision: Decision, error: type[HTTPException] | None = None
) -> NoReturn:
    """Raise the rejection of ``decision``: a 429 (503) HTTPException, or ``error`` for a 429.

    A websocket handshake gets the same HTTP answer where the server can send one (the websocket
    denial response), else it is closed with 1008 (policy violation).
    """
    ex = Exchange.of(request.scope)
    if ex is not None:
        ex.annotate(**{POLICY_FIELD: policy.name})
    exc = rejection(policy, decision)
    scope = request.scope
    if scope["type"] == "websocket" and "websocket.http.response" not in scope.get("extensions", {}):
        raise WebSocketException(1008, exc.detail)
    if error is not None and not decision.unavailable:
        raise error(exc.status_code, exc.detail, headers=exc.headers)
    raise exc


class RateLimit:
    """A FastAPI dependency limiting one route (or a router: ``APIRouter(dependencies=[...])``).

    ``rates`` as in ``OPSKIT_RATE_LIMIT`` (``"5/second burst=10, 100/minute"``: all apply), or a
    function (sync or async) returning such a text or :class:`~opskit.ratelimit.Rate` objects: the
    rates of one key (a user's plan), computed once per key every ``cache_seconds``. ``key`` is
    ``"ip"`` (proxy-aware), ``"header:<Name>"``, a callable taking the request and returning the
    key, or ``Depends(dependency)``: the dependency's result (e.g. the user your auth dependency
    resolved; FastAPI runs it once per request for the route and the limit) is who is counted, its
    ``str()`` the key, and what a rate function is called with (otherwise it gets the request).
    ``None`` as the key: not limited. ``cost`` the tokens one request takes, or a function (sync or
    async) of the request returning them. ``chargeable`` lets :func:`~opskit.ratelimit.charge`
    debit this limit after the fact. ``messages`` (websocket routes) limits the messages a
    connection receives, per key (``"20/second"``): one over it closes the connection with 1008.
    ``name`` the policy name in headers, metrics and keys (default: the route's path template, so
    each route has its own buckets). Several ``RateLimit`` dependencies on one route all apply.
    """

    def __new__(cls, rates: str | RateSource, /, **options: Any) -> RateLimit:
        # A static limit keeps the lean __call__; anything computed per request takes the other one.
        key, cost = options.get("key", "ip"), options.get("cost", 1)
        dynamic = (
            callable(rates)
            or callable(cost)
            or _is_depends(key)
            or options.get("chargeable", False)
            or options.get("messages") is not None
        )
        return super().__new__(DynamicRateLimit if dynamic and cls is RateLimit else cls)

    def __init__(
        self,
        rates: str | RateSource,
        *,
        name: str | None = None,
        key: str | KeyFunc | Any = "ip",
        cost: int | CostSource = 1,
        limiter: RateLimiter | None = None,
        chargeable: bool = False,
        cache_seconds: float = 60.0,
        messages: str | None = None,
    ) -> None:
        static_rates = rates if isinstance(rates, str) else _UNSET_RATES
        static_key = "ip" if _is_depends(key) else key
        self.template = Policy.build(name or "route", static_rates, static_key, cost if isinstance(cost, int) else 1)
        self.name = name
        self.limiter = limiter
        self._policies: dict[str, Policy] = {}
        # What only DynamicRateLimit.__call__ reads.
        self._rates = None if isinstance(rates, str) else RateCache(rates, cache_seconds)
        self._cost = None if isinstance(cost, int) else cost
        self._variants = PolicyVariants()
        self.chargeable = chargeable
        self._messages = None if messages is None else Policy.build((name or "route") + ":messages", messages)
        self._message_policies: dict[str, Policy] = {}
        parameters = [
            inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=HTTPConnection),
            inspect.Parameter("response", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Response),
        ]
        self._by_dependency = _is_depends(key)
        if self._by_dependency:
            # FastAPI reads this signature: the key's dependency becomes a sub-dependency of this one.
            parameters.append(inspect.Parameter("subject", inspect.Parameter.KEYWORD_ONLY, default=key))
        self.__signature__ = inspect.Signature(parameters)

    def policy_for(self, request: HTTPConnection) -> Policy:
        """This dependency's policy for the route being served (named after its template)."""
        if self.name is not None:
            return self.template
        # The route template, never the raw path: policy names are metric labels.
        name = str(getattr(request.scope.get("route"), "path", None) or "route")
        policy = self._policies.get(name)
        if policy is None:
            policy = self.template.renamed(name)
            if len(self._policies) < 1000:
                self._policies[name] = policy
        return policy

    async def __call__(self, request: HTTPConnection, response: Response) -> None:
        await check(request, self.policy_for(request), response, self.limiter)


class DynamicRateLimit(RateLimit):
    """A :class:`RateLimit` with computed rates, costs or keys, charges or message limits."""

    async def __call__(self, request: HTTPConnection, response: Response, subject: Any = None) -> None:
        policy = self.policy_for(request)
        counted: object = request
        if self._by_dependency:
            if subject is None:
                return
            client_key: str | None = "k:" + str(subject)
            counted = subject
        else:
            client_key = policy.key(request.scope)
        if client_key is None:
            return
        if self._rates is not None:
            policy = self._variants.with_rates(policy, await self._rates.rates(client_key, counted))
        cost: int | None = None
        if self._cost is not None:
            cost = await resolve(self._cost(request))
            if cost < 0:
                raise ValueError(f"the cost function of rate limit {policy.name!r} returned {cost}")
        active = limiter_for(request.scope, self.limiter)
        decision = await active.hit(policy, client_key, cost)
        if not decision.allowed:
            refuse(request, policy, decision)
        if active.headers and request.scope["type"] == "http":
            for field_name, value in rate_limit_headers(policy.name, decision, legacy=active.legacy_headers):
                response.headers.append(field_name.decode(), value.decode())
        if self.chargeable:
            open_tab(request.scope, Tab(active, policy, client_key))
        if self._messages is not None and isinstance(request, WebSocket):
            limit_messages(request, active, self._message_policy(policy.name), client_key)

    def _message_policy(self, name: str) -> Policy:
        assert self._messages is not None
        policy = self._message_policies.get(name)
        if policy is None:
            policy = self._messages.renamed(name + ":messages")
            if len(self._message_policies) < 1000:
                self._message_policies[name] = policy
        return policy


def _is_depends(value: object) -> bool:
    """Whether ``value`` is FastAPI's ``Depends(...)`` (without importing FastAPI when it is absent)."""
    return type(value).__name__ == "Depends" and hasattr(value, "dependency")
