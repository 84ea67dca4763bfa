"""Charging after the fact: ``await charge(tokens)`` debits the buckets that admitted this request.

A cost known only once the work is done (the tokens of a completion, the bytes of an export) is
spent with ``force``: it is taken even when the bucket lacks it, the bucket goes into debt, and the
next requests of that key are refused until the debt has refilled.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection

from .decision import Decision
from .policy import Policy

if TYPE_CHECKING:
    from .limiter import RateLimiter

__all__ = ["Tab", "charge", "open_tab"]

#: The scope key holding the tabs of a request (a list), for charges from another task.
SCOPE_KEY = "opskit.ratelimit.tabs"


@dataclass(frozen=True, slots=True)
class Tab:
    """A bucket that admitted the request: where a later charge goes."""

    limiter: RateLimiter
    policy: Policy
    client_key: str


_tabs: ContextVar[tuple[MutableMapping[str, Any], list[Tab]] | None] = ContextVar("opskit_ratelimit_tabs", default=None)


def open_tab(scope: MutableMapping[str, Any], tab: Tab) -> None:
    """Record that ``tab``'s bucket admitted the request of ``scope`` (a chargeable limit)."""
    tabs: list[Tab] | None = scope.get(SCOPE_KEY)
    if tabs is None:
        tabs = scope[SCOPE_KEY] = []
    tabs.append(tab)
    current = _tabs.get()
    if current is None or current[0] is not scope:
        _tabs.set((scope, tabs))


async def charge(amount: int, *, name: str | None = None, request: HTTPConnection | None = None) -> list[Decision]:
    """Debit ``amount`` tokens from the chargeable limits that admitted the current request.

    Call it from the endpoint, a background task or a streaming body, also after the response was
    sent. The tokens are taken even when the bucket lacks them: the bucket goes into debt and that
    key's next requests are refused (429) until it has refilled. ``name`` picks one limit by its
    policy name; ``request`` names the request when the call runs outside its context (another
    task). Returns the decisions (``allowed`` is whether the charge fitted). Raises
    :class:`LookupError` when no chargeable limit (``RateLimit(..., chargeable=True)``) admitted
    the request: a charge that goes nowhere is a bug, not something to ignore.
    """
    if amount < 0:
        raise ValueError("a charge is at least 0 tokens")
    tabs: list[Tab] | None
    if request is not None:
        tabs = request.scope.get(SCOPE_KEY)
    else:
        current = _tabs.get()
        tabs = None if current is None else current[1]
    chosen = [t for t in tabs or () if name is None or t.policy.name == name]
    if not chosen:
        which = f" named {name!r}" if name is not None else ""
        raise LookupError(f"no chargeable rate limit{which} admitted this request (RateLimit(..., chargeable=True))")
    if amount == 0:
        return []
    return [await t.limiter.hit(t.policy, t.client_key, amount, force=True) for t in chosen]
