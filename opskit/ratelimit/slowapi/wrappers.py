"""One declared limit (``@limiter.limit(...)``, a default or an application limit) and how it reads a request."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from starlette.requests import HTTPConnection

from ..rate import Rate, parse_rates

__all__ = ["Limit", "LimitValue"]

#: A rate text (``"5/minute"``, ``"1/second;100/day"``) or a callable returning one, called with no
#: argument or, when it has a ``key`` parameter, with the key of the request.
LimitValue = str | Callable[..., str]


def _parameters(func: Callable[..., Any]) -> list[str]:
    try:
        return list(inspect.signature(func).parameters)
    except (TypeError, ValueError):  # a builtin without a signature: call it without arguments
        return []


class Limit:
    """A limit as slowapi declares it: rate text, key function, scope, methods, exemption, cost, message.

    ``policy`` is the opskit policy name (a metric label: the endpoint's function, the shared
    scope, ``default`` or ``application``); the request's scope and key, which may be unbounded
    (``key_style="url"`` counts per path), only reach the hashed bucket key.
    """

    def __init__(
        self,
        limit_value: LimitValue,
        key_func: Callable[..., Any],
        scope: str | Callable[[str], str] | None,
        per_method: bool,
        methods: Sequence[str] | None,
        error_message: str | Callable[[], str] | None,
        exempt_when: Callable[..., bool] | None,
        cost: int | Callable[..., int],
        override_defaults: bool,
        policy: str,
    ) -> None:
        self.limit_value = limit_value
        self.key_func = key_func
        self.scope = scope
        self.per_method = per_method
        self.methods = None if methods is None else [m.lower() for m in methods]
        self.error_message = error_message
        self.exempt_when = exempt_when
        self.cost = cost
        self.override_defaults = override_defaults
        self.policy = policy
        self._key_takes_request = "request" in _parameters(key_func)
        self._value_takes_key = callable(limit_value) and "key" in _parameters(limit_value)
        self._exempt_takes_request = exempt_when is not None and len(_parameters(exempt_when)) == 1
        #: The rate shown in messages: the first of a static text (parsed now: a bad text fails at import).
        self.limit: Rate | None = parse_rates(limit_value)[0] if isinstance(limit_value, str) else None

    def exempt(self, request: HTTPConnection) -> bool:
        """``exempt_when``, called with the request when it takes one argument."""
        if self.exempt_when is None:
            return False
        return bool(self.exempt_when(request) if self._exempt_takes_request else self.exempt_when())

    def applies_to(self, method: str) -> bool:
        return self.methods is None or method.lower() in self.methods

    def key(self, request: HTTPConnection) -> str:
        """The key function's answer (called with the request when it has a ``request`` parameter)."""
        value = self.key_func(request) if self._key_takes_request else self.key_func()
        return "" if value is None else str(value)

    def text(self, key: str) -> str:
        """The rate text of this request (a callable value is read on every request)."""
        value = self.limit_value
        if not callable(value):
            return value
        return str(value(key) if self._value_takes_key else value())

    def scope_for(self, endpoint: str) -> str:
        """The bucket's scope: the shared scope, else the endpoint (its path or function name)."""
        if self.scope is None:
            return endpoint
        return self.scope(endpoint) if callable(self.scope) else self.scope

    def spend(self, request: HTTPConnection) -> int:
        return int(self.cost(request)) if callable(self.cost) else self.cost
