"""The limiter: a backend, the failure policy around it, metrics and bounded-rate logs."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from opskit.throttle import ThrottledLog

from .breaker import CircuitBreaker
from .decision import BackendError, Decision, Outcome
from .local_share import LocalShareBackend
from .memory import MemoryBackend
from .metrics import RateLimitMetrics, default_metrics
from .policy import Policy
from .redis_backend import RedisBackend
from .selection import backend_from_settings
from .shared_memory import SharedMemoryBackend

if TYPE_CHECKING:
    from opskit.settings import Settings

__all__ = ["RateLimiter"]

logger = logging.getLogger("opskit.ratelimit")


class RateLimiter:
    """Decides requests against policies; never raises, never waits longer than the backend timeout.

    ``on_error`` is what a backend failure (or an open circuit breaker) means: ``allow`` lets the
    request through, ``reject`` answers 503, ``memory`` decides with a per-process bucket instead.
    ``headers`` sends the RateLimit fields on allowed responses too; ``legacy_headers`` adds the
    ``X-RateLimit-*`` trio.
    """

    def __init__(
        self,
        backend: RedisBackend | LocalShareBackend | MemoryBackend,
        *,
        prefix: str = "opskit:rl:",
        on_error: str = "allow",
        breaker: CircuitBreaker | None = None,
        metrics: RateLimitMetrics | None = None,
        log_interval: float = 10.0,
        memory_max_keys: int = 100_000,
        headers: bool = True,
        legacy_headers: bool = False,
    ) -> None:
        if on_error not in ("allow", "reject", "memory"):
            raise ValueError("on_error must be 'allow', 'reject' or 'memory'")
        self.backend = backend
        self.headers = headers
        self.legacy_headers = legacy_headers
        self.prefix = prefix
        self.on_error = on_error
        self.breaker = breaker or CircuitBreaker()
        self._node_breakers: dict[str, CircuitBreaker] = {}
        self.metrics = metrics or default_metrics()
        self.log = ThrottledLog(logger, log_interval)
        self.fallback = MemoryBackend(memory_max_keys) if on_error == "memory" else None
        remote = backend.remote if isinstance(backend, LocalShareBackend) else backend
        if isinstance(remote, RedisBackend) and remote._on_round_trip is None:
            remote._on_round_trip = self.metrics.backend_latency
        if isinstance(backend, SharedMemoryBackend) and backend.on_busy is None:
            backend.on_busy = self._table_busy

    @classmethod
    def from_settings(cls, settings: Settings, metrics: RateLimitMetrics | None = None) -> RateLimiter:
        """The backend :func:`~.selection.backend_from_settings` picks, with the settings' failure policy."""
        return cls(
            backend_from_settings(settings),
            prefix=settings.rate_limit_key_prefix,
            on_error=settings.rate_limit_on_error,
            breaker=CircuitBreaker(settings.rate_limit_breaker_failures, settings.rate_limit_breaker_seconds),
            metrics=metrics,
            log_interval=settings.rate_limit_log_interval,
            memory_max_keys=settings.rate_limit_memory_max_keys,
            headers=settings.rate_limit_headers,
            legacy_headers=settings.rate_limit_legacy_headers,
        )

    @property
    def shared(self) -> bool:
        """True when limits hold across processes (Redis), False for per-process buckets."""
        return self.backend.shared

    async def hit(self, policy: Policy, client_key: str, cost: int | None = None, *, force: bool = False) -> Decision:
        """Spend ``cost`` (default: the policy's) tokens of ``client_key`` under ``policy``.

        ``force`` spends them even past what the bucket allows (a charge after the fact, see
        :func:`~opskit.ratelimit.charge`): the bucket goes into debt and the decision says whether it
        would have passed. Forced spends are not counted as decisions in the metrics.
        """
        key = policy.storage_key(self.prefix, client_key)
        spend = policy.cost if cost is None else cost
        backend = self.backend
        if isinstance(backend, MemoryBackend):
            decision = backend.decide(key, policy.rates, spend, force=force)
        elif (breaker := self._breaker(node := backend.node_of(key))).closed:
            try:
                decision = await backend.decide(key, policy.rates, spend, force=force)
                breaker.success()
            except Exception as exc:  # whatever went wrong, the request gets the failure policy, not a 500
                reason = exc.reason if isinstance(exc, BackendError) else "other"
                if reason != "cancelled" and breaker.failure():
                    where = f" {node}" if node else ""
                    self.log.warning(
                        "circuit_open",
                        f"rate-limit backend{where} failing; pausing it for "
                        f"{breaker.open_seconds:g}s (on_error={self.on_error})",
                    )
                decision = self._failed(policy, key, spend, reason, force)
        else:
            decision = self._failed(policy, key, spend, "circuit_open", force)
        if not force:
            self.metrics.decision(policy.name, decision.outcome)
        return decision

    def _breaker(self, node: str) -> CircuitBreaker:
        """The breaker of one Redis server: one dead Cluster master pauses only the keys it serves."""
        if not node:
            return self.breaker
        breaker = self._node_breakers.get(node)
        if breaker is None:
            breaker = self._node_breakers[node] = CircuitBreaker(self.breaker.threshold, self.breaker.open_seconds)
        return breaker

    def _table_busy(self) -> None:
        self.metrics.backend_error("busy")
        self.log.warning("busy", "rate-limit table locked past its budget; decided in this worker's buckets")

    def _failed(self, policy: Policy, key: str, cost: int, reason: str, force: bool = False) -> Decision:
        self.metrics.backend_error(reason)
        self.log.warning(reason, f"rate-limit backend error ({reason}); on_error={self.on_error}")
        outcome: Outcome
        if self.fallback is not None:
            decision = self.fallback.decide(key, policy.rates, cost, force=force)
            decision.outcome = "error_allowed" if decision.allowed else "error_rejected"
            return decision
        outcome = "error_allowed" if self.on_error == "allow" else "error_rejected"
        rate = policy.rates[0]
        retry = self.breaker.open_seconds if outcome == "error_rejected" else 0.0
        return Decision(outcome, rate, rate.burst, retry, 0.0, unavailable=outcome == "error_rejected")

    async def warm_up(self) -> bool:
        """Connect and load the script ahead of the first request; True when the backend answered."""
        backend = self.backend
        return await backend.warm_up() if isinstance(backend, (RedisBackend, LocalShareBackend)) else True

    async def ping(self) -> bool:
        """Readiness: the backend answers (always true in memory)."""
        backend = self.backend
        return await backend.ping() if isinstance(backend, (RedisBackend, LocalShareBackend)) else True

    async def close(self) -> None:
        backend = self.backend
        if isinstance(backend, (RedisBackend, LocalShareBackend)):
            await backend.close()
