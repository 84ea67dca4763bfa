"""The rate limiter inside opskit's middleware: the global limit as the ``admit`` gate."""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

from starlette.types import ASGIApp

from opskit.component import Component
from opskit.exchange import Exchange
from opskit.paths import PathPatterns

from .dependency import POLICY_FIELD, limiter_of
from .limiter import RateLimiter
from .policy import Policy, client_ip
from .responses import rate_limit_headers, rejection_app
from .shared_memory import SharedMemoryBackend

if TYPE_CHECKING:
    from opskit.runtime import Runtime

__all__ = ["EXTERNAL_POLICY", "GlobalRateLimitComponent", "RateLimitComponent", "create_component"]

logger = logging.getLogger("opskit.ratelimit")

# The policy name of a 429 answered by something other than opskit (e.g. slowapi's own Limiter).
EXTERNAL_POLICY = "external"
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimitComponent(Component):
    """Runs the runtime's limiter (shared with route limits), and attributes every 429 (its own or
    the app's) to a policy in the access log and metrics."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.limiter = limiter_of(runtime)
        self.policy = (
            Policy.build("global", settings.rate_limit, settings.rate_limit_key)
            if settings.rate_limit.strip()
            else None
        )
        self._exempt_paths = PathPatterns(settings.rate_limit_exempt_paths)
        self._networks: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in settings.rate_limit_exempt_networks
        )
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

    def response_started(self, ex: Exchange) -> None:
        """Name the policy behind a refusal, also when the app refused by itself (a foreign 429)."""
        if ex.status == 429 and (ex.annotations is None or POLICY_FIELD not in ex.annotations):
            # A 429 from the app itself (slowapi's Limiter, a hand-written check): count and name it.
            ex.annotate(**{POLICY_FIELD: EXTERNAL_POLICY})
            self.limiter.metrics.decision(EXTERNAL_POLICY, "limited")

    async def startup(self) -> None:
        if isinstance(self.limiter.backend, SharedMemoryBackend):
            logger.info("rate limits are per server: its workers share buckets (set OPSKIT_REDIS_URL to share them)")
            return
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
        # Limiters of other stores (a slowapi Limiter's own storage_uri) close with the runtime too.
        for name, service in list(self.runtime.services.items()):
            if name.startswith("ratelimit:") and isinstance(service, RateLimiter):
                await service.close()


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
        ex.annotate(**{POLICY_FIELD: policy.name})
        return rejection_app(policy.name, decision, legacy=limiter.legacy_headers)


def create_component(runtime: Runtime) -> RateLimitComponent | None:
    """The rate-limit component (``None`` when ``OPSKIT_RATELIMIT_ENABLED=false``)."""
    settings = runtime.settings
    if not settings.ratelimit_enabled:
        return None
    if settings.rate_limit.strip():
        return GlobalRateLimitComponent(runtime)
    return RateLimitComponent(runtime)
