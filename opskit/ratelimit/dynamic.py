"""Limits that depend on who asks: rates and costs computed per request, rates cached per key."""

from __future__ import annotations

import functools
import inspect
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from .policy import Policy
from .rate import Rate, parse_rates

__all__ = ["CostSource", "PolicyVariants", "RateCache", "RateSource", "as_rates", "resolve"]

T = TypeVar("T")
Rates = str | Sequence[Rate]
#: What a rate function returns: a rate text (``"10/minute"``) or parsed rates, directly or awaited.
RateSource = Callable[[Any], Rates | Awaitable[Rates]]
#: A cost function: the tokens a request takes, directly or awaited.
CostSource = Callable[[Any], int | Awaitable[int]]

_MAX_VARIANTS = 1000


async def resolve(value: T | Awaitable[T]) -> T:
    """``value``, awaited when a coroutine or another awaitable (sync and async functions alike)."""
    if inspect.isawaitable(value):
        return await value
    return value


@functools.lru_cache(maxsize=1024)
def _parsed(text: str) -> tuple[Rate, ...]:
    return parse_rates(text)


def as_rates(value: object) -> tuple[Rate, ...]:
    """Rates from what a rate function returned: a rate text, a :class:`Rate` or a sequence of them."""
    if isinstance(value, str):
        return _parsed(value)
    if isinstance(value, Rate):
        return (value,)
    if isinstance(value, Sequence) and value and all(isinstance(r, Rate) for r in value):
        return tuple(value)
    raise ValueError(f"a rate function returned {value!r}: expected a rate text such as '10/minute' or Rate objects")


class RateCache:
    """The rates a rate function gave each client key, kept ``seconds`` (an LRU of ``max_keys``).

    The function may query a database (the user's plan): it runs once per key and period, not per
    request. A plan change takes effect within ``seconds``.
    """

    def __init__(self, source: RateSource, seconds: float = 60.0, max_keys: int = 10_000) -> None:
        self.source = source
        self.seconds = seconds
        self.max_keys = max_keys
        self._entries: OrderedDict[str, tuple[float, tuple[Rate, ...]]] = OrderedDict()

    async def rates(self, client_key: str, subject: object) -> tuple[Rate, ...]:
        """The rates of ``client_key``: cached, else ``source(subject)``."""
        entries = self._entries
        now = time.monotonic()
        entry = entries.get(client_key)
        if entry is not None and entry[0] > now:
            entries.move_to_end(client_key)
            return entry[1]
        rates = as_rates(await resolve(self.source(subject)))
        if self.seconds > 0:
            entries[client_key] = (now + self.seconds, rates)
            entries.move_to_end(client_key)
            if len(entries) > self.max_keys:
                entries.popitem(last=False)
        return rates


class PolicyVariants:
    """A policy under several rates (one per plan): the same name, key, buckets and storage keys."""

    def __init__(self) -> None:
        self._by_rates: dict[tuple[str, tuple[Rate, ...]], Policy] = {}

    def with_rates(self, policy: Policy, rates: tuple[Rate, ...]) -> Policy:
        """``policy`` with ``rates`` (a bucket keeps its state when its key's rates change)."""
        if rates == policy.rates:
            return policy
        variant = self._by_rates.get((policy.name, rates))
        if variant is None:
            variant = replace(policy, rates=rates)  # shares the policy's storage-key cache
            if len(self._by_rates) < _MAX_VARIANTS:
                self._by_rates[(policy.name, rates)] = variant
        return variant
