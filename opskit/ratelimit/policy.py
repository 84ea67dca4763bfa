"""A policy: named rates, who they count (the key function) and what a request costs."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.requests import Request

from opskit.exchange import Exchange

from .rate import Rate, parse_rates

__all__ = ["KeyFunc", "Policy", "client_ip", "header_key", "key_from_spec"]

Scope = MutableMapping[str, Any]
# A key function sees the request and returns who is counted, or None to leave it unlimited.
KeyFunc = Callable[[Request], str | None]
ScopeKeyFunc = Callable[[Scope], str | None]

_KEY_UNSAFE = str.maketrans({"{": "(", "}": ")", " ": "_"})
_KEY_CACHE_SIZE = 4096
_POLICY_NAME = re.compile(r"^[\x20-\x7e]{1,200}$")


def client_address(scope: Scope) -> str | None:
    """The client address: proxy-aware under opskit's middleware (trusted proxies only), else the peer."""
    ex = Exchange.of(scope)
    if ex is not None:
        return ex.client
    peer = scope.get("client")
    return str(peer[0]) if peer else None


def client_ip(scope: Scope) -> str | None:
    """Count by client address (proxy-aware); ``None`` (not limited) when the address is unknown."""
    client = client_address(scope)
    return None if client is None else "ip:" + client


def header_key(name: str) -> ScopeKeyFunc:
    """Count by the value of header ``name`` (e.g. an API key); without it, by client address.

    Falling back to the address means leaving the header out never escapes the limit.
    """
    raw = name.lower().encode("latin-1")

    def key(scope: Scope) -> str | None:
        for header, value in scope.get("headers", ()):
            if header == raw and value:
                return "h:" + bytes(value).decode("latin-1")
        return client_ip(scope)

    return key


def key_from_spec(spec: str | KeyFunc) -> ScopeKeyFunc:
    """``"ip"``, ``"header:<Name>"`` or a callable taking the request."""
    if callable(spec):
        user = spec

        def key(scope: Scope) -> str | None:
            value = user(Request(scope))
            return None if value is None else "k:" + str(value)

        return key
    if spec == "ip":
        return client_ip
    if spec.startswith("header:") and len(spec) > len("header:"):
        return header_key(spec[len("header:") :])
    raise ValueError(f"unknown key {spec!r}: expected 'ip', 'header:<Name>' or a callable")


def _key_safe(name: str) -> str:
    # Braces in a route template would end the Cluster hash tag early: keep them out of keys.
    return name.translate(_KEY_UNSAFE)


@dataclass(frozen=True)
class Policy:
    """Rates applied together (a request passes only if every one has tokens), per key."""

    name: str
    rates: tuple[Rate, ...]
    key: ScopeKeyFunc = client_ip
    cost: int = 1
    _slot_prefix: str = field(default="", repr=False)
    _keys: dict[tuple[str, str], str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(cls, name: str, rates: str | tuple[Rate, ...], key: str | KeyFunc = "ip", cost: int = 1) -> Policy:
        """Validate and build a policy from the text forms used in settings and decorators."""
        if not _POLICY_NAME.match(name):
            raise ValueError(f"policy name {name!r}: expected 1-200 printable ASCII characters")
        if cost < 1:
            raise ValueError("cost must be at least 1")
        parsed = parse_rates(rates) if isinstance(rates, str) else rates
        return cls(name=name, rates=parsed, key=key_from_spec(key), cost=cost, _slot_prefix=_key_safe(name))

    def renamed(self, name: str) -> Policy:
        """The same rates, key and cost under another name (hence other buckets)."""
        if not _POLICY_NAME.match(name):
            raise ValueError(f"policy name {name!r}: expected 1-200 printable ASCII characters")
        return replace(self, name=name, _slot_prefix=_key_safe(name), _keys={})

    def storage_key(self, prefix: str, client_key: str) -> str:
        """``prefix + policy + {hash}``: the client key is hashed (never stored raw), the hash is the
        Cluster hash tag, so a decision touches one slot and clients spread over the cluster."""
        cache = self._keys
        key = cache.get((prefix, client_key))
        if key is None:
            digest = hashlib.blake2b(client_key.encode("utf-8", "surrogateescape"), digest_size=12).hexdigest()
            key = f"{prefix}{self._slot_prefix}:{{{digest}}}"
            if len(client_key) <= 256:  # a hostile 8 KB header must not pin megabytes
                if len(cache) >= _KEY_CACHE_SIZE:
                    cache.clear()  # busy clients come back within microseconds; the rest may go
                cache[(prefix, client_key)] = key
        return key
