"""What clients see: IETF RateLimit fields, Retry-After, and the 429 / 503 JSON answers."""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from .decision import Decision

__all__ = ["Headers", "rate_limit_headers", "rejection_app", "rejection_detail"]

Headers = list[tuple[bytes, bytes]]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


@functools.lru_cache(maxsize=1024)
def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@functools.lru_cache(maxsize=1024)
def _fields(name: str, burst: int, window: int) -> tuple[bytes, bytes]:
    """The ``RateLimit-Policy`` value and the quoted name that starts ``RateLimit`` (one lookup per response)."""
    quoted = _quote(name)
    return f"{quoted};q={burst};w={window}".encode(), quoted.encode()


def rate_limit_headers(policy: str, decision: Decision, *, legacy: bool = False) -> Headers:
    """``RateLimit-Policy`` and ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers-10).

    ``q`` is the bucket size and ``w`` the seconds an empty bucket takes to fill; ``r`` the tokens
    left and ``t`` the seconds until the bucket is full again. ``legacy`` adds the
    ``X-RateLimit-Limit/-Remaining/-Reset`` trio (reset in seconds from now).
    """
    rate = decision.rate
    reset = math.ceil(decision.reset)
    policy_field, prefix = _fields(policy, rate.burst, rate.window)
    headers = [
        (b"ratelimit-policy", policy_field),
        (b"ratelimit", b"%s;r=%d;t=%d" % (prefix, decision.remaining, reset)),
    ]
    if legacy:
        headers += [
            (b"x-ratelimit-limit", str(rate.burst).encode()),
            (b"x-ratelimit-remaining", str(decision.remaining).encode()),
            (b"x-ratelimit-reset", str(reset).encode()),
        ]
    return headers


def retry_after(decision: Decision) -> int:
    """Whole seconds, rounded up, and at least 1 for any rejection."""
    return max(1, math.ceil(decision.retry_after - 1e-9))


def rejection_detail(decision: Decision) -> str:
    """The ``detail`` of the JSON body."""
    if decision.unavailable:
        return "Rate limiter unavailable"
    return f"Rate limit exceeded: {decision.rate}"


def rejection_app(policy: str, decision: Decision, *, legacy: bool = False) -> ASGIApp:
    """An ASGI app answering 429 (limited) or 503 (backend failed, fail-closed) in FastAPI's error shape."""
    status = 503 if decision.unavailable else 429
    body = orjson.dumps({"detail": rejection_detail(decision)})
    headers: Headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after(decision)).encode()),
    ]
    if not decision.unavailable:
        headers += rate_limit_headers(policy, decision, legacy=legacy)

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Callable[[Message], Awaitable[None]]) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app
