"""The rate limiter inside opskit's middleware: the global limit as the ``admit`` gate."""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

from starlette.types import ASGIApp

from opskit.client_ip import ProxyResolver
from opskit.component import Component
from opskit.exchange import Exchange
from opskit.paths import PathPatterns

from .dependency import LIMITER_SCOPE_KEY, POLICY_SCOPE_KEY
from .limiter import RateLimiter
from .metrics import RateLimitMetrics
from .policy import PROXIES_SCOPE_KEY, Policy, client_ip
from .responses import rate_limit_headers, rejection_app

if TYPE_CHECKING:
    from opskit.settings import Settings

__all__ = ["EXTERNAL_POLICY", "GlobalRateLimitComponent", "RateLimitComponent", "create_component"]

logger = logging.getLogger("opskit.ratelimit")

# The policy name of a 429 answered by something other than opskit (e.g. slowapi's own Limiter).
EXTERNAL_POLICY = "external"
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimitComponent(Component):
    """Serves route limits their limiter and the proxy-aware client, and attributes every 429 (its
    own or the app's) to a policy in the access log and metrics."""

    def __init__(self, settings: Settings, metrics: RateLimitMetrics | None = None) -> None:
        self.limiter = RateLimiter.from_settings(settings, metrics)
        self.policy = (
            Policy.build("global", settings.rate_limit, settings.rate_limit_key)
            if settings.rate_limit.strip()
            else None
        )
        self._exempt_paths = PathPatterns(settings.rate_limit_exempt_paths)
        self._networks: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in settings.rate_limit_exempt_networks
        )
        self.proxies = ProxyResolver(settings.trusted_proxies)
        self._readiness = settings.rate_limit_readiness_check

    def _exempt(self, ex: Exchange) -> bool:
        path = ex.path
        if path in self._exempt_paths:
            return True
        if self._networks and ex.client is not None:
            try:
                address = ipaddress.ip_address(ex.client)
            except ValueError:
                return False
            return any(address in network for network in self._networks)
        return False

    def request_started(self, ex: Exchange) -> None:
        # Route limits (dependency, slowapi-style decorator) find the limiter and the client here.
        scope = ex.scope
        scope[LIMITER_SCOPE_KEY] = self.limiter
        scope[PROXIES_SCOPE_KEY] = self.proxies

    def response_started(self, ex: Exchange) -> None:
        """Name the policy behind a refusal, also when the app refused by itself (a foreign 429)."""
        if ex.rate_limit_policy is not None:
            return
        name = ex.scope.get(POLICY_SCOPE_KEY)
        if name is not None:
            ex.rate_limit_policy = str(name)
        elif ex.status == 429:
            # A 429 from the app itself (slowapi's Limiter, a hand-written check): count and name it.
            ex.rate_limit_policy = EXTERNAL_POLICY
            self.limiter.metrics.decision(EXTERNAL_POLICY, "limited")

    async def startup(self) -> None:
        if not self.limiter.shared:
            logger.info("rate limits are per-process: in-memory buckets (set OPSKIT_REDIS_URL to share them)")
            return
        if self._readiness:
            from opskit.health import add_readiness_check

            add_readiness_check("ratelimit_redis", self.limiter.ping)
        if not await self.limiter.warm_up():
            logger.warning("rate-limit Redis does not answer; on_error=%s applies", self.limiter.on_error)

    async def shutdown(self) -> None:
        await self.limiter.close()


class GlobalRateLimitComponent(RateLimitComponent):
    """:class:`RateLimitComponent` plus ``OPSKIT_RATE_LIMIT`` on every request, as the ``admit`` gate.

    A separate class so that without a global limit the middleware has no gate to await at all.
    """

    async def admit(self, ex: Exchange) -> ASGIApp | None:
        policy = self.policy
        if policy is None or self._exempt(ex):
            return None
        if policy.key is client_ip:
            client = ex.client  # resolved once per request, shared with the access log
            client_key = None if client is None else "ip:" + client
        else:
            client_key = policy.key(ex.scope)
        if client_key is None:
            return None
        limiter = self.limiter
        decision = await limiter.hit(policy, client_key)
        if decision.allowed:
            if limiter.headers:
                ex.response_headers += rate_limit_headers(policy.name, decision, legacy=limiter.legacy_headers)
            return None
        ex.rate_limit_policy = policy.name
        return rejection_app(policy.name, decision, legacy=limiter.legacy_headers)


def create_component(settings: Settings, app: object = None) -> RateLimitComponent | None:
    """The rate-limit component for ``settings`` (``None`` when ``OPSKIT_RATELIMIT_ENABLED=false``)."""
    if not settings.ratelimit_enabled:
        return None
    if settings.rate_limit.strip():
        return GlobalRateLimitComponent(settings)
    return RateLimitComponent(settings)
