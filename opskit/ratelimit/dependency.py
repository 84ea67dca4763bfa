"""Per-route limits as a FastAPI dependency: ``Depends(RateLimit("5/second burst=10"))``."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from opskit.exchange import Exchange
from opskit.runtime import Runtime, current

from .decision import Decision
from .limiter import RateLimiter
from .policy import KeyFunc, Policy
from .responses import rate_limit_headers, rejection_detail, retry_after

__all__ = ["POLICY_FIELD", "RateLimit", "limiter_for", "limiter_of"]

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
    request: Request,
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
        ex = Exchange.of(request.scope)
        if ex is not None:
            ex.annotate(**{POLICY_FIELD: policy.name})
        exc = rejection(policy, decision)
        if error is not None and not decision.unavailable:
            raise error(exc.status_code, exc.detail, headers=exc.headers)
        raise exc
    if response is not None and active.headers:
        for name, value in rate_limit_headers(policy.name, decision, legacy=active.legacy_headers):
            response.headers.append(name.decode(), value.decode())
    return decision


class RateLimit:
    """A FastAPI dependency limiting one route (or a router: ``APIRouter(dependencies=[...])``).

    ``rates`` as in ``OPSKIT_RATE_LIMIT`` (``"5/second burst=10, 100/minute"``: all apply);
    ``key`` is ``"ip"`` (proxy-aware), ``"header:<Name>"`` or a callable taking the request and
    returning the key (``None``: not limited); ``cost`` the tokens one request takes; ``name`` the
    policy name in headers, metrics and keys (default: the route's path template, so each route has
    its own buckets). Several ``RateLimit`` dependencies on one route all apply.
    """

    def __init__(
        self,
        rates: str,
        *,
        name: str | None = None,
        key: str | KeyFunc = "ip",
        cost: int = 1,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.template = Policy.build(name or "route", rates, key, cost)
        self.name = name
        self.limiter = limiter
        self._policies: dict[str, Policy] = {}

    def policy_for(self, request: Request) -> Policy:
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

    async def __call__(self, request: Request, response: Response) -> None:
        await check(request, self.policy_for(request), response, self.limiter)
