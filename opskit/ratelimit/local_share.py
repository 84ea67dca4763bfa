"""Fewer Redis calls for hot keys: each process reserves a share of a bucket and spends it locally.

One ``EVALSHA`` per decision makes Redis the limiter's ceiling (about 63k scripts/s per core). With
``OPSKIT_RATE_LIMIT_LOCAL_SHARE=f`` a process asks Redis for ``S = floor(f x burst)`` tokens at once
(the smallest burst of the policy's rates) and answers the next requests of that key from them,
without a round trip. When a bucket has fewer than ``S`` tokens the process takes what is left; when
it has none, the process refuses the key locally until Redis says a whole share will be there again.
Tokens not spent within ``OPSKIT_RATE_LIMIT_LOCAL_SHARE_SECONDS`` expire (they are not returned).
Concurrent requests of one key wait for the reservation already on its way instead of sending
their own. A policy whose share is no more than a request's cost, and a forced spend, go to Redis as
before.

**The bound.** Every token a process spends was taken from the Redis bucket first, and a process
holds at most ``S`` tokens of a key at a time. So across ``P`` processes, over any stretch of time,
admitted requests exceed what one exact bucket admits by at most ``P x S`` (tokens reserved before
the stretch and spent in it). They fall short of it by at most ``(P + 1) x S``: the tokens sitting
unspent in leases, plus fewer than ``S`` waiting in Redis for a whole share; and by up to ``S`` more
per lease that expires unspent (a process that stopped seeing the key). With ``f = 0.02``, 8 pods of
8 workers and a limit of 10,000/minute, that is at most 64 x 200 = 12,800 tokens: pick ``f`` so that
``P x S`` is an error you accept, or use it only for limits far above one request per process.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from .decision import Decision
from .rate import Rate
from .redis_backend import RedisBackend

__all__ = ["Lease", "LocalShareBackend"]

_ROUNDS = 3  # reservations of other requests one decision waits for before sending its own


class Lease:
    """Tokens of one key this process took from Redis, and what Redis said about the bucket then."""

    __slots__ = ("expires", "limited_until", "pending", "rate", "remaining", "reset_at", "tokens")

    def __init__(self, rate: Rate) -> None:
        self.tokens = 0
        self.expires = 0.0
        self.limited_until = 0.0
        self.remaining = 0
        self.reset_at = 0.0
        self.rate = rate
        self.pending: asyncio.Future[None] | None = None


class LocalShareBackend:
    """A :class:`RedisBackend` that reserves ``share`` of a bucket per call (see the module docstring).

    ``max_keys`` bounds the leases kept (least recently used dropped first).
    """

    shared = True

    def __init__(
        self,
        remote: RedisBackend,
        share: float,
        *,
        seconds: float = 1.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < share <= 0.5:
            raise ValueError("share must be in (0, 0.5]")
        self.remote = remote
        self.share = share
        self.seconds = seconds
        self.max_keys = max_keys
        self._clock = clock
        self._leases: OrderedDict[str, Lease] = OrderedDict()
        self._sizes: dict[tuple[Rate, ...], int] = {}

    def share_of(self, rates: Sequence[Rate]) -> int:
        """``S``: the tokens one reservation takes for a policy of ``rates``."""
        key = tuple(rates)
        size = self._sizes.get(key)
        if size is None:
            size = self._sizes[key] = max(1, math.floor(self.share * min(rate.burst for rate in rates)))
        return size

    def node_of(self, key: str) -> str:
        """The Redis server deciding ``key`` (for the limiter's per-server breakers)."""
        return self.remote.node_of(key)

    async def decide(self, key: str, rates: Sequence[Rate], cost: int = 1, *, force: bool = False) -> Decision:
        """Take ``cost`` tokens of ``key`` from this process's share, reserving a new share when it is spent."""
        if force:
            self._leases.pop(key, None)  # the debt must be seen by the next decision, not hidden by a lease
            return await self.remote.decide(key, rates, cost, force=True)
        share = self.share_of(rates)
        if share <= cost:
            return await self.remote.decide(key, rates, cost)
        for _ in range(_ROUNDS):
            lease = self._leases.get(key)
            if lease is None:
                break
            now = self._clock()
            if now < lease.expires:
                if lease.tokens >= cost:
                    lease.tokens -= cost
                    self._leases.move_to_end(key)
                    reset = max(0.0, lease.reset_at - now)
                    return Decision("allowed", lease.rate, lease.remaining + lease.tokens, 0.0, reset)
                if now < lease.limited_until:
                    reset = max(0.0, lease.reset_at - now)
                    return Decision("limited", lease.rate, 0, lease.limited_until - now, reset)
            if lease.pending is None:
                break
            await asyncio.shield(lease.pending)
        return await self._reserve(key, rates, cost, share)

    async def _reserve(self, key: str, rates: Sequence[Rate], cost: int, share: int) -> Decision:
        leases = self._leases
        lease = leases.get(key)
        if lease is None:
            lease = leases[key] = Lease(rates[0])
            if len(leases) > self.max_keys:
                leases.popitem(last=False)
        leases.move_to_end(key)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lease.pending = done
        try:
            decision = await self.remote.decide(key, rates, share)
            granted = share if decision.allowed else 0
            if not granted and decision.remaining >= cost:
                # Fewer than a share left: take what there is.
                want = min(decision.remaining, share)
                decision = await self.remote.decide(key, rates, want)
                granted = want if decision.allowed else 0
            now = self._clock()
            lease.rate = decision.rate
            lease.reset_at = now + decision.reset
            lease.expires = now + self.seconds
            if granted:
                lease.tokens = granted - cost
                lease.remaining = decision.remaining
                lease.limited_until = 0.0
                return Decision("allowed", decision.rate, decision.remaining + lease.tokens, 0.0, decision.reset)
            # Refuse locally until a whole share is back: the next call then takes S tokens, not one.
            lease.tokens = 0
            lease.remaining = 0
            lease.limited_until = now + decision.retry_after
            return Decision("limited", decision.rate, decision.remaining, decision.retry_after, decision.reset)
        finally:
            if lease.pending is done:
                lease.pending = None
            done.set_result(None)

    async def warm_up(self, timeout: float = 2.0, *, fill_pools: bool = True) -> bool:
        """Connect and load the script (see :meth:`RedisBackend.warm_up`)."""
        return await self.remote.warm_up(timeout, fill_pools=fill_pools)

    async def ping(self) -> bool:
        """The readiness check of the Redis behind the shares."""
        return await self.remote.ping()

    async def close(self) -> None:
        """Drop the leases (their tokens expire in Redis) and close the Redis backend."""
        self._leases.clear()
        await self.remote.close()
